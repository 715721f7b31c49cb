"""The reliability suite's guarded secret: the API token its connections carry, and its forms."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

SCENARIO = Path(__file__).with_name("scenario.yaml")
SECRET = "reliab-secret-token-9f"  # the scenario's api_token
TOKEN_WITH_NEWLINE = f"{SECRET}\n"
# Every form in which the token could show: as given, stripped, repr'd (how a header error prints it),
# in a header, percent-encoded in a URL. Each holds SECRET, which is what the byte scans look for.
SECRET_FORMS = (
    TOKEN_WITH_NEWLINE,
    SECRET,
    repr(TOKEN_WITH_NEWLINE),
    repr(f"Bearer {TOKEN_WITH_NEWLINE}"),
    quote(TOKEN_WITH_NEWLINE, safe=""),
)


def leaked_forms(texts: list[str]) -> list[str]:
    """The forms of the token that occur in any of ``texts``."""
    return sorted({form for form in SECRET_FORMS for text in texts if form in text}, key=SECRET_FORMS.index)
