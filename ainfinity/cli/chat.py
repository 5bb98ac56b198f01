"""`ainfinity chat MODEL`: talk to a model; each answer is printed as it is generated.

    ainfinity chat ft:tiny-random-llama:quickstart
    ainfinity chat ft:tiny-random-llama:quickstart -m "What is 2 plus 2?" --temperature 0
    printf 'Hi!\\nAnd then?\\n' | ainfinity chat tiny-random-llama   # one answer per line

Every line read from stdin is a user turn, and the whole conversation goes with each
request, so the model sees what was said before. `/reset` starts over; `/exit` or the end
of the input ends. Answers go to stdout, one after another, each ended by a newline.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from ainfinity.cli.context import connect
from ainfinity.client import Client, StreamFailed

_EXIT = ("/exit", "/quit")
_RESET = "/reset"


class Conversation:
    """The messages sent with each turn: the system prompt, then every turn and answer."""

    def __init__(self, system: str | None) -> None:
        self.system = system
        self.messages: list[dict[str, str]] = []
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def add(self, role: str, content: str) -> None:
        self.messages.append({"role": role, "content": content})


def chat(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Argument(help="The model's id (see `ainfinity models list`).", show_default=False),
    ],
    message: Annotated[
        str | None,
        typer.Option("--message", "-m", help="Ask this one question, print the answer, exit."),
    ] = None,
    system: Annotated[
        str | None, typer.Option("--system", "-s", help="A system prompt for the conversation.")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(min=1, help="At most this many tokens per answer.")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(min=0, max=2, help="0 answers greedily (deterministic).")
    ] = None,
    top_p: Annotated[
        float | None, typer.Option(max=1, help="Nucleus sampling: above 0, at most 1.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Makes sampling repeatable.")] = None,
) -> None:
    """Chat with a model: the answer streams in as it is generated.

    One user turn per line of stdin, until its end or /exit; /reset forgets the conversation.
    """
    options: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
    }
    conversation = Conversation(system)
    interactive = message is None and sys.stdin.isatty()
    with connect(ctx) as client:
        if message is not None:
            _answer(client, model, conversation, message, options)
            return
        if interactive:
            print(f"Chatting with {model}: /reset starts over, /exit ends.", file=sys.stderr)
        for turn in _turns(interactive):
            if turn in _EXIT:
                return
            if turn == _RESET:
                conversation.reset()
                continue
            _answer(client, model, conversation, turn, options)


def _turns(interactive: bool) -> Iterator[str]:
    """User turns, one per line; blank lines are skipped."""
    while True:
        try:
            # input() gives line editing on a terminal; a pipe is read a line at a time, so
            # a script can read each answer before it writes the next turn.
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:
            return
        if not interactive and not line:
            return
        text = line.rstrip("\r\n").strip()
        if text:
            yield text


def _answer(
    client: Client,
    model: str,
    conversation: Conversation,
    text: str,
    options: dict[str, Any],
) -> None:
    conversation.add("user", text)
    pieces: list[str] = []
    try:
        for piece in client.chat_stream(model, conversation.messages, **options):
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
    except StreamFailed:
        # What arrived stays on screen; the error goes on a line of its own.
        sys.stdout.write("\n")
        sys.stdout.flush()
        raise
    sys.stdout.write("\n")
    sys.stdout.flush()
    conversation.add("assistant", "".join(pieces))
