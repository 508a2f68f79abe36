# -*- test-case-name: ross.test.integration.test_tui -*-
"""
The TUI's modal screens: a yes/no confirmation and the key help.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class ConfirmScreen(ModalScreen[bool]):
    """
    Asks C{question}; dismissed with True on "y"/Yes, False on "n",
    Escape or No.
    """

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question, id="question")
            with Horizontal(id="buttons"):
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


HELP = """\
[b]Ross console[/b]: containers live from the daemons' event streams.
Every action shows its [b]ross[/b] command line at the bottom.  Ctrl-P: every action by name.

[b]Containers[/b] (on the marked rows, else the selected one)
  s  start           x  stop (asks)        r  restart
  p  pause/unpause   d  remove (asks)      i  inspect (folding JSON)
  space  mark/unmark *  mark all / none    /  filter by name, image, status, host
  l  follow logs (marked: interleaved)     t  CPU, memory, network, block I/O
  e  shell (exec sh) in a pane             a  attach to the main process

[b]Log pane[/b] (Tab to it)
  /  search, n / N next, previous          &  filter in the daemon, + / - context
  o  stdout, stderr, both    t  timestamps  g  jump to a time   f  follow   e  export

[b]Panes[/b]
  Every key goes to the program in the focused pane.
  Shift-PgUp/PgDn, wheel: scrollback      drag: select and copy
  Ctrl-]      back to the table (the pane keeps running)
  w           close the last pane used (detaches; the process runs on)

[b]Views[/b]
  1 containers  2 images  3 volumes  4 networks  5 events  6 stats of all   ?  this help
  images: P pull  T tag  d remove  h history  i inspect;  volumes, networks: d remove  i inspect
  q, Ctrl-Q  quit.   Keys can be changed in ~/.config/ross/tui.toml ([keys]).

Escape or ? closes this help.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static(HELP, id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)
