"""Shell completion scripts for the `driftguard` command, written from its argparse parser.

`driftguard completion bash|zsh|fish` prints one. Commands, options and fixed choices
come from the parser itself, so a new flag completes without touching this module;
Environment names complete live through `kubectl get environments`. Text only: it
reads the parser and never talks to the cluster itself.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

SHELLS = ("bash", "zsh", "fish")
PROGRAMS = ("driftguard", "kubectl-driftguard")
# Positionals named so complete to Environments of the namespace given with -n, if any.
ENVIRONMENT = "environment"
# Environment names of the namespace in $ns (every shell below sets it from -n/--namespace).
LIST_ENVIRONMENTS = (
    "kubectl get environments.driftguard.io $ns_args"
    " -o jsonpath='{.items[*].metadata.name}' 2>/dev/null"
)


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    help: str
    takes_value: bool
    choices: tuple[str, ...]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    options: tuple[Option, ...]
    positionals: tuple[str, ...]  # their dests, in order
    choices: tuple[str, ...]  # fixed values of the first positional, if it has any


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for ``shell`` (one of SHELLS)."""
    top = _options(parser)
    commands = _commands(parser)
    writers = {"bash": _bash, "zsh": _zsh, "fish": _fish}
    return writers[shell](top, commands)


def _options(parser: argparse.ArgumentParser) -> tuple[Option, ...]:
    found = []
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        choices = tuple(str(c) for c in action.choices) if action.choices else ()
        found.append(
            Option(tuple(action.option_strings), _one_line(action.help), action.nargs != 0, choices)
        )
    return tuple(found)


def _commands(parser: argparse.ArgumentParser) -> tuple[Command, ...]:
    found = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: _one_line(choice.help) for choice in action._choices_actions}
        for name, sub in action.choices.items():
            positionals = [a for a in sub._actions if not a.option_strings]
            first = positionals[0] if positionals else None
            choices = tuple(str(c) for c in first.choices) if first and first.choices else ()
            found.append(
                Command(
                    name,
                    helps.get(name, ""),
                    _options(sub),
                    tuple(a.dest for a in positionals),
                    choices,
                )
            )
    return tuple(found)


def _one_line(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def _kind(option: Option) -> str:
    """What an option's value completes to: its choices, files, namespaces, or nothing."""
    if option.choices:
        return "choices"
    if "--kubeconfig" in option.flags:
        return "files"
    if "--namespace" in option.flags:
        return "namespaces"
    return "none"


def _value_flags(options: tuple[Option, ...]) -> list[str]:
    return [flag for option in options if option.takes_value for flag in option.flags]


def _bash(top: tuple[Option, ...], commands: tuple[Command, ...]) -> str:
    skip = "|".join(_value_flags(top)) or "--"
    top_words = " ".join([c.name for c in commands] + [f for o in top for f in o.flags])
    cases = []
    for command in commands:
        words = [f for o in command.options for f in o.flags] + list(command.choices)
        values = []
        for option in command.options:
            if option.takes_value:
                reply = _BASH_VALUES[_kind(option)].format(" ".join(option.choices))
                values.append(f"            {'|'.join(option.flags)}) {reply} ;;")
        dynamic = "yes" if ENVIRONMENT in command.positionals else ""
        cases.append(
            f"        {command.name})\n"
            f'            words="{" ".join(words)}"; envs="{dynamic}"\n'
            f'            case "$prev" in\n' + "\n".join(values) + ("\n" if values else "") +
            "            esac ;;"
        )  # fmt: skip
    return _BASH.format(
        skip=skip, top_words=top_words, cases="\n".join(cases), list=LIST_ENVIRONMENTS,
        programs=" ".join(PROGRAMS),
    )  # fmt: skip


# What COMPREPLY becomes after an option that takes a value ({} holds the choices).
_BASH_VALUES = {
    "choices": 'COMPREPLY=($(compgen -W "{}" -- "$cur")); return',
    "files": 'COMPREPLY=($(compgen -f -- "$cur")); return',
    "namespaces": 'COMPREPLY=($(compgen -W "$(kubectl get namespaces'
    ' -o jsonpath=\'{{.items[*].metadata.name}}\' 2>/dev/null)" -- "$cur")); return',
    "none": "COMPREPLY=(); return",
}

_BASH = """\
# bash completion for driftguard and kubectl-driftguard: `driftguard completion bash`.
# Load it now with: source <(driftguard completion bash)
_driftguard() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local command="" ns_args="" words="" envs="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            -n|--namespace) ns_args="-n ${{COMP_WORDS[i+1]}}"; ((i++)) ;;
            {skip}) ((i++)) ;;
            -*) ;;
            *) [ -z "$command" ] && command="${{COMP_WORDS[i]}}" ;;
        esac
    done
    if [ -z "$command" ]; then
        case "$prev" in
            --kubeconfig) COMPREPLY=($(compgen -f -- "$cur")); return ;;
            {skip}) COMPREPLY=(); return ;;
        esac
        COMPREPLY=($(compgen -W "{top_words}" -- "$cur"))
        return
    fi
    case "$command" in
{cases}
    esac
    if [ -n "$envs" ] && [[ "$cur" != -* ]]; then
        words="$words $({list})"
    fi
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -F _driftguard {programs}
"""


def _zsh_quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "'\\''").replace("[", "\\[").replace("]", "\\]")


def _zsh_specs(options: tuple[Option, ...]) -> list[str]:
    specs = []
    for option in options:
        value = ""
        if option.takes_value:
            actions = {
                "choices": f"({' '.join(option.choices)})",
                "files": "_files",
                "namespaces": "_driftguard_namespaces",
                "none": " ",
            }
            value = f":value:{actions[_kind(option)]}"
        description = f"[{_zsh_quote(option.help)}]{value}'"
        if len(option.flags) == 1:
            specs.append(f"'{option.flags[0]}{description}")
        else:
            exclusive = f"'({' '.join(option.flags)})'"
            specs.append(exclusive + "{" + ",".join(option.flags) + "}'" + description)
    return specs


def _zsh(top: tuple[Option, ...], commands: tuple[Command, ...]) -> str:
    listing = "\n".join(f"        '{c.name}:{_zsh_quote(c.help)}'" for c in commands)
    cases = []
    for command in commands:
        specs = _zsh_specs(command.options)
        if command.choices:
            specs.append(f"'1:{command.positionals[0]}:({' '.join(command.choices)})'")
        elif ENVIRONMENT in command.positionals:
            specs.append("'1:environment:_driftguard_environments'")
        body = " \\\n                ".join(specs)
        cases.append(f"        {command.name})\n            _arguments -s {body} ;;")
    return _ZSH.format(
        top=" \\\n        ".join(_zsh_specs(top)),
        listing=listing,
        cases="\n".join(cases),
        programs=" ".join(PROGRAMS),
    )


_ZSH = """\
#compdef {programs}
# zsh completion for driftguard and kubectl-driftguard: `driftguard completion zsh`.
# Load it now with: source <(driftguard completion zsh)   (after compinit)
_driftguard_environments() {{
    local ns_args="" i
    for ((i = 1; i < ${{#words}}; i++)); do
        [[ ${{words[i]}} == (-n|--namespace) ]] && ns_args="-n ${{words[i+1]}}"
    done
    local -a names
    names=(${{=$(kubectl get environments.driftguard.io ${{=ns_args}} \
        -o jsonpath='{{.items[*].metadata.name}}' 2>/dev/null)}})
    compadd -a names
}}

_driftguard_namespaces() {{
    local -a names
    names=(${{=$(kubectl get namespaces -o jsonpath='{{.items[*].metadata.name}}' 2>/dev/null)}})
    compadd -a names
}}

_driftguard() {{
    local curcontext="$curcontext" state line
    local -a commands
    commands=(
{listing}
    )
    _arguments -C {top} \\
        '1:command:->command' '*::argument:->argument'
    case $state in
        command) _describe 'command' commands ;;
        argument)
            case ${{line[1]}} in
{cases}
            esac ;;
    esac
}}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _driftguard "$@"
else
    compdef _driftguard {programs}
fi
"""


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_option(program: str, condition: str, option: Option) -> str:
    parts = [f"complete -c {program} -n {_fish_quote(condition)}"]
    for flag in option.flags:
        parts.append(f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}")
    if option.takes_value:
        parts.append("-r")
        kind = _kind(option)
        if kind == "choices":
            parts.append(f"-f -a {_fish_quote(' '.join(option.choices))}")
        elif kind == "files":
            parts.append("-F")
        elif kind == "namespaces":
            parts.append("-f -a '(__driftguard_namespaces)'")
    if option.help:
        parts.append(f"-d {_fish_quote(option.help)}")
    return " ".join(parts)


def _fish(top: tuple[Option, ...], commands: tuple[Command, ...]) -> str:
    lines = [
        "# fish completion for driftguard and kubectl-driftguard: `driftguard completion fish`.",
        "# Load it now with: driftguard completion fish | source",
        "function __driftguard_environments",
        "    set -l tokens (commandline -opc)",
        "    set -l ns_args",
        "    for i in (seq (count $tokens))",
        "        if contains -- $tokens[$i] -n --namespace; and test $i -lt (count $tokens)",
        "            set ns_args -n $tokens[(math $i + 1)]",
        "        end",
        "    end",
        "    kubectl get environments.driftguard.io $ns_args"
        " -o jsonpath='{.items[*].metadata.name}' 2>/dev/null | string split ' '",
        "end",
        "function __driftguard_namespaces",
        "    kubectl get namespaces -o jsonpath='{.items[*].metadata.name}' 2>/dev/null"
        " | string split ' '",
        "end",
    ]
    names = " ".join(c.name for c in commands)
    for program in PROGRAMS:
        lines.append(f"complete -c {program} -f")
        for option in top:
            lines.append(_fish_option(program, f"not __fish_seen_subcommand_from {names}", option))
        for command in commands:
            lines.append(
                f"complete -c {program} -n {_fish_quote('__fish_use_subcommand')}"
                f" -a {command.name} -d {_fish_quote(command.help)}"
            )
            seen = f"__fish_seen_subcommand_from {command.name}"
            for option in command.options:
                lines.append(_fish_option(program, seen, option))
            if command.choices:
                lines.append(
                    f"complete -c {program} -n {_fish_quote(seen)}"
                    f" -a {_fish_quote(' '.join(command.choices))}"
                )
            elif ENVIRONMENT in command.positionals:
                lines.append(
                    f"complete -c {program} -n {_fish_quote(seen)} -a '(__driftguard_environments)'"
                )
    return "\n".join(lines) + "\n"
