"""Checks of the shell commands that docs/deployment.md and the deploy files' comments tell an
operator to run. Each returns a list of problems (empty: fine)."""

import re


def _commands(text):
    """Shell lines of `text`, comment markers ('# ') stripped and backslash continuations joined."""
    lines = [re.sub(r"^\s*#\s?", "", line).strip() for line in text.splitlines()]
    joined, current = [], ""
    for line in lines:
        current += line
        if line.endswith("\\"):
            current = current[:-1] + " "
        else:
            joined.append(current)
            current = ""
    return joined + ([current] if current else [])


def check_bind_mounts_made_first(text):
    """`docker run --user ... -v "$PWD/DIR:..."` needs `mkdir -p DIR` before it: Docker makes a
    missing bind-mount source as root, and the user the container runs as cannot write there."""
    problems, made = [], set()
    for command in _commands(text):
        made.update(re.findall(r"mkdir -p \"?([\w./-]+?)/?\"?(?:\s|$)", command))
        if "docker run" in command and "--user" in command:
            for source in re.findall(r"-v \"?\$PWD/([\w./-]+?)/?:", command):
                if source not in made:
                    problems.append(f"`{command}`: the bind-mount source {source} is not made "
                                    f"first (mkdir -p {source}): Docker would make it as root")
    return problems


def _inline_code(text):
    """`code spans` of Markdown, prose line breaks inside them made spaces."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)  # fenced blocks are _commands'
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]


def check_no_copy_into_containers(text):
    """`docker compose cp SRC SERVICE:PATH` (or `docker cp`), as a shell line or a code span,
    makes root-owned files in the container, which the apps (uid 10001) cannot write: versions
    go in by `ctl add-version`."""
    copy = re.compile(r"docker (compose\s+(-f \S+\s+)?)?cp\s+(-\S+\s+)*[^\s:]+\s+[\w.-]+:")
    return [f"`{command}`: copies into a container; the files would belong to root"
            for command in _commands(text) + _inline_code(text) if copy.search(command)]
