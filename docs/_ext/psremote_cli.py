"""Sphinx extension: the command-line reference, read from the CLI's own argparse parser.

``` {psremote-cli}
```

in a MyST page calls ``psremote.cli.build_parser()`` (the parser ``psremote`` itself runs) and
emits the top-level usage, then one section per subcommand: its help, its usage as argparse
prints it, and each argument group's options as ``option`` directives under a ``program``
(so ``{option}`` roles such as ``psremote run --json`` link to them). An option added to the
CLI appears without an edit here.
"""

from __future__ import annotations

import argparse
from typing import List

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import make_id


def _text(text: str) -> str:
    """Plain help text as Markdown that cannot turn into HTML, emphasis or a role."""
    return (
        text.replace("\\", "\\\\")
        .replace("<", "&lt;")
        .replace("*", "\\*")
        .replace("_", "\\_")
        .replace("`", "\\`")
        .replace("{", "\\{")
    )


def _subcommands(parser: argparse.ArgumentParser) -> List[argparse._SubParsersAction]:
    return [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]


def _option_lines(parser: argparse.ArgumentParser, program: str) -> List[str]:
    formatter = parser._get_formatter()
    lines = [f"```{{program}} {program}", "```", ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)]
        if not actions:
            continue
        lines += [f"```{{rubric}} {group.title.capitalize() if group.title else 'Options'}", "```", ""]
        for action in actions:
            if action.option_strings:
                if action.nargs == 0:
                    spelled = ", ".join(action.option_strings)
                else:
                    argument = formatter._format_args(action, action.dest.upper())
                    spelled = ", ".join(f"{option} {argument}" for option in action.option_strings)
            else:
                spelled = action.metavar if isinstance(action.metavar, str) else action.dest
            help_text = formatter._expand_help(action) if action.help else ""
            lines += [f"```{{option}} {spelled}", _text(help_text), "```", ""]
    return lines


def _fixed_width(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, width=88)


class CliDirective(SphinxDirective):
    """``{psremote-cli}``: the usage of ``psremote`` and a section per subcommand."""

    has_content = False

    def run(self) -> List[nodes.Node]:
        from psremote import cli

        parser = cli.build_parser()
        # The usage lines are wrapped at a fixed width, whatever terminal runs the build.
        for each in [parser] + [sub for action in _subcommands(parser) for sub in action.choices.values()]:
            each.formatter_class = _fixed_width
        result: List[nodes.Node] = []
        top = nodes.container()
        lines = [_text(parser.description or ""), "", "```text", *parser.format_usage().rstrip().splitlines(), "```", ""]
        lines += _option_lines(parser, "psremote")
        self.state.nested_parse(StringList(lines, source="psremote.cli"), 0, top)
        result.extend(top.children)
        for action in _subcommands(parser):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                title = f"psremote {name}"
                section = nodes.section()
                section["ids"].append(make_id(self.env, self.state.document, "cli", title))
                section["names"].append(nodes.fully_normalize_name(title))
                section += nodes.title(text=title)
                summary = helps.get(name) or ""
                body = [_text(summary[:1].upper() + summary[1:] + "."), ""]
                if sub.description:
                    body += [_text(sub.description), ""]
                body += ["```text", *sub.format_usage().rstrip().splitlines(), "```", ""]
                body += _option_lines(sub, title)
                self.state.nested_parse(StringList(body, source=f"psremote.cli {name}"), 0, section)
                self.state.document.note_implicit_target(section, section)
                result.append(section)
        return result


def setup(app: Sphinx) -> dict:
    app.add_directive("psremote-cli", CliDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
