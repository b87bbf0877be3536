"""Small modal screens: a one-line prompt, a yes/no question, the first-run welcome, help."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Input, Label, Static

from p2pshare.protocol import limits as L
from p2pshare.tui import records as R


def field(label: str, widget: Widget) -> Horizontal:
    """One line of a form: a label, then the input (compact, so a form fits 24 rows)."""
    return Horizontal(Label(label), widget, classes="field")


class TextPrompt(ModalScreen[str | None]):
    """One line of input (a recommendation's text, an invite code, a community name)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, placeholder: str = "", *, max_length: int = 0) -> None:
        super().__init__()
        self.title_text = title
        self.placeholder = placeholder
        self.max_length = max_length

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="prompt"):
            yield Static(self.title_text)
            yield Input(placeholder=self.placeholder, max_length=self.max_length)
            yield Static("[dim]enter to confirm, escape to cancel[/dim]", id="prompt-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if not value:
            self.query_one("#prompt-error", Static).update(
                "[red]Type something, or press escape.[/red]"
            )
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class Confirm(ModalScreen[bool]):
    """A question answered with y or n."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question)
            yield Static("\n[b]y[/b] yes   [b]n[/b] no")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


CreateIdentity = Callable[[str], Awaitable[None]]


class WelcomeScreen(ModalScreen[str]):
    """First run: ask for a display name and create the identity with it."""

    def __init__(self, create: CreateIdentity) -> None:
        super().__init__()
        self.create = create

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="welcome"):
            yield Static("[b]Welcome to p2pshare[/b]\n")
            yield Static(
                "Share guides, catalogues and how-tos with people you choose, and vouch for"
                " theirs. Peers will see you by a display name; you can change it later (u).\n"
            )
            yield Input(
                placeholder="your display name, e.g. Cycle Works",
                max_length=L.MAX_NAME_CHARS,
                id="welcome-name",
            )
            yield Static("", id="welcome-error")

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        name = event.value.strip()
        error = self.query_one("#welcome-error", Static)
        if not name:
            error.update("[red]Type a name: your shop's, your project's or your own.[/red]")
            return
        error.update("Creating your identity…")
        try:
            await self.create(name)
        except Exception as exc:  # shown, and the person may try again
            error.update(f"[red]{R.escape(str(exc))}[/red]")
            return
        self.dismiss(name)


HELP = """[b]p2pshare — keys[/b]

[b]On a record[/b] (feed, search, my shares, a document)
  enter  open it: licence, who recommends it, how it reached you
  r  recommend it       p  republish it (if its licence allows)
  d  download it        s  save a copy to ~/Downloads    o  open it
  f  follow the author  b  block the author (drops their records)

[b]Places[/b]
  /  search      m  my shares (share a file, retract)   e  peers
  g  communities t  transfers   u  your profile   escape  back
  n  show new records           ctrl+r  reload this screen

[b]Network[/b]
  c  join with an invite code   i  show an invite code

[b]Anywhere[/b]
  ?  this help   ctrl+p  every command   q  quit

Republishing keeps the author's signature and credits everyone who passed it on. \
It is refused when the licence does not allow it: recommend such a document instead.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,question_mark,q", "app.pop_screen", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="help"):
            yield Static(HELP)
