"""Demo MCP server shipped with Tollgate for `make run`: an in-memory notes book over stdio.

Tools add_note, list_notes, search_notes and read_note; resource `notes://all`; prompt
`summarize_notes`. Seeded with three notes, forgotten on exit. Needs only the `mcp` SDK.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError


@dataclass
class Note:
    title: str
    body: str


NOTES: dict[str, Note] = {
    note.title.lower(): note
    for note in (
        Note("Welcome", "This notes server sits behind Tollgate, which meters every call to it."),
        Note("Groceries", "Coffee beans, oat milk, rye bread, lemons."),
        Note("Release checklist", "Run make test, bump the version, tag, write the changelog."),
    )
}

server = MCPServer(name="notes", instructions="A small notes book: add, list, search and read notes.")


@server.tool()
def add_note(title: str, body: str) -> str:
    """Add a note, or replace the note with the same title (titles are case-insensitive)."""
    replaced = title.lower() in NOTES
    NOTES[title.lower()] = Note(title, body)
    return f"{'Replaced' if replaced else 'Added'} note {title!r}."


@server.tool()
def list_notes() -> list[str]:
    """The titles of all notes, in the order they were added."""
    return [note.title for note in NOTES.values()]


@server.tool()
def search_notes(query: str) -> list[str]:
    """Titles of notes whose title or body contains `query` (case-insensitive)."""
    needle = query.lower()
    return [n.title for n in NOTES.values() if needle in n.title.lower() or needle in n.body.lower()]


@server.tool()
def read_note(title: str) -> str:
    """The body of the note with this title."""
    note = NOTES.get(title.lower())
    if note is None:
        raise ToolError(f"no note titled {title!r}; list_notes shows the titles")
    return note.body


@server.resource("notes://all", name="all-notes", mime_type="text/markdown")
def all_notes() -> str:
    """Every note as one Markdown document."""
    return "\n\n".join(f"# {n.title}\n\n{n.body}" for n in NOTES.values())


@server.prompt()
def summarize_notes(focus: str = "anything actionable") -> str:
    """Ask the model to summarize the notes with a given focus."""
    return f"Read the resource notes://all and summarize the notes, focusing on {focus}."


if __name__ == "__main__":
    server.run("stdio")
