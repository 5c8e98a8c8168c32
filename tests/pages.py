"""Reading a page the way a person does: the messages under each form field,
and the flashed alerts, as text (entities decoded, whitespace collapsed).

Tests compare them whole (``form_errors(page) == {"username": [...]}``), so
that a message that changed, or a second one that appeared, is noticed; a
fragment found with ``in`` would miss both.
"""

from html.parser import HTMLParser


class _PageReader(HTMLParser):
    """Collects the messages under each form field, and the flashed alerts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)  # "don&#39;t" reads "don't"
        self.field: str | None = None  # the last field seen: its messages follow it
        self.errors: dict[str, list[str]] = {}
        self.alerts: list[tuple[str, str]] = []
        self._collecting: tuple[str, str] | None = None  # ("error", field) or ("alert", kind)
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag in ("input", "textarea", "select") and attrs.get("name"):
            self.field = attrs["name"]
        elif tag == "div" and "invalid-feedback" in classes:
            self._collecting, self._text = ("error", self.field), []
        elif tag == "div" and attrs.get("role") == "alert":
            kind = next((c.removeprefix("alert-") for c in classes if c.startswith("alert-")), "")
            self._collecting, self._text = ("alert", kind), []

    def handle_data(self, data):
        if self._collecting:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "div" and self._collecting:
            what, name = self._collecting
            text = " ".join("".join(self._text).split())
            if what == "error":
                self.errors.setdefault(name, []).append(text)
            else:
                self.alerts.append((name, text))
            self._collecting = None


def read_page(page) -> _PageReader:
    reader = _PageReader()
    reader.feed(page if isinstance(page, str) else page.get_data(as_text=True))
    return reader


def form_errors(page) -> dict[str, list[str]]:
    """The messages a page shows under its form's fields: {field name: [message, ...]}.

    `page` is a response or its HTML. Exactly what the reader sees, entities decoded.
    """
    return read_page(page).errors


def alerts(page) -> list[tuple[str, str]]:
    """The flashed messages on a page, as (category, text): ("danger", "Invalid ...")."""
    return read_page(page).alerts
