"""Reads Dockerfiles and .dockerignore the way Docker does, for checks without a Docker engine.

Only what deploy/docker/*.Dockerfile use is understood: line continuations, comments, global
ARGs in FROM, named stages, the shell and JSON (exec) forms, COPY flags, ENV in both forms.
"""

import json
import os
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    text: str  # everything after the keyword, continuations joined
    line: int  # where it starts in the file, for messages

    def exec_form(self):
        """The JSON array of CMD/ENTRYPOINT/RUN in exec form, else None."""
        stripped = self.text.strip()
        if not stripped.startswith("["):
            return None
        return json.loads(stripped)


@dataclass
class Copy:
    sources: list
    destination: str
    from_stage: str | None
    line: int


@dataclass
class Stage:
    index: int
    base: str  # image after global ARG substitution
    name: str | None
    instructions: list = field(default_factory=list)

    def all(self, keyword):
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword):
        found = self.all(keyword)
        return found[-1] if found else None

    def copies(self):
        result = []
        for instruction in self.all("COPY") + self.all("ADD"):
            words = instruction.exec_form() or shlex.split(instruction.text)
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            from_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            result.append(Copy(paths[:-1], paths[-1], from_stage, instruction.line))
        return result

    def env(self):
        """ENV values of this stage, ARG defaults substituted where they are used."""
        args = {}
        values = {}
        for instruction in self.instructions:
            if instruction.keyword == "ARG":
                name, _, default = instruction.text.strip().partition("=")
                args[name] = default
            elif instruction.keyword == "ENV":
                for name, value in _env_pairs(instruction.text):
                    values[name] = _substitute(value, {**args, **values})
        return values

    def arg_default(self, name):
        for instruction in self.all("ARG"):
            key, _, default = instruction.text.strip().partition("=")
            if key == name:
                return default
        return None

    def apt_packages(self):
        """Package names given to `apt-get install` in this stage's RUN instructions."""
        packages = []
        for instruction in self.all("RUN"):
            for command in re.split(r"&&|\|\||;|\|", instruction.text):
                words = shlex.split(command)
                if "apt-get" in words and "install" in words[words.index("apt-get"):]:
                    after = words[words.index("install", words.index("apt-get")) + 1:]
                    packages += [w for w in after if not w.startswith("-")]
        return packages

    def cmake_commands(self):
        """The RUN instructions that are cmake command lines (configure, build, install)."""
        return [i.text for i in self.all("RUN") if i.text.startswith("cmake ")]

    def user(self):
        instruction = self.last("USER")
        return instruction.text.strip() if instruction else None

    def workdir(self):
        instruction = self.last("WORKDIR")
        return instruction.text.strip() if instruction else None


@dataclass
class Dockerfile:
    path: Path
    global_args: dict
    stages: list

    def stage(self, name):
        return next((s for s in self.stages if s.name == name), None)

    @property
    def final(self):
        return self.stages[-1]

    def local_bin(self, installed):
        """Programs the final stage has in /usr/local/bin: the scripts it copies there from the
        context and, when it copies the build stage's install prefix bin/ there, `installed`
        (what cmake --install puts into bin/)."""
        build = self.stage("build")
        prefix = re.search(r"--prefix (\S+)", " ".join(build.cmake_commands())) if build else None
        names = set()
        for copy in self.final.copies():
            if copy.destination != "/usr/local/bin/":
                continue
            if copy.from_stage is None:
                names |= {source.rsplit("/", 1)[-1] for source in copy.sources}
            elif prefix and copy.from_stage == "build" and copy.sources == [prefix.group(1) + "/bin/"]:
                names |= set(installed)
        return names

    def command_line(self):
        """ENTRYPOINT + CMD of the final stage, as the container's argv."""
        entrypoint = self.final.last("ENTRYPOINT")
        cmd = self.final.last("CMD")
        return (entrypoint.exec_form() if entrypoint else []) + (cmd.exec_form() if cmd else [])


def _logical_lines(text):
    """(line number, text) per instruction: comments dropped, continuations joined."""
    current, start = "", None
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines even inside a continued instruction
        if start is None:
            start = number
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        yield start, current + stripped
        current, start = "", None
    if start is not None:
        yield start, current


def _env_pairs(text):
    words = shlex.split(text)
    if words and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]  # legacy form: ENV NAME value
    return [tuple(word.split("=", 1)) for word in words]


def _substitute(value, variables):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)",
                  lambda m: variables.get(m.group(1) or m.group(2), ""), value)


def parse_dockerfile(path):
    global_args, stages = {}, []
    for line, logical in _logical_lines(Path(path).read_text()):
        keyword, _, rest = logical.partition(" ")
        instruction = Instruction(keyword.upper(), rest.strip(), line)
        if instruction.keyword == "ARG" and not stages:
            name, _, default = instruction.text.partition("=")
            global_args[name] = default
        elif instruction.keyword == "FROM":
            words = instruction.text.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(len(stages), _substitute(words[0], global_args), name))
        elif stages:
            stages[-1].instructions.append(instruction)
    return Dockerfile(Path(path), global_args, stages)


class DockerIgnore:
    """A .dockerignore: patterns matched like Docker's (moby/patternmatcher): paths relative
    to the context root, `*` and `?` within one path element, `**` across elements, `!` to
    re-include; a path is excluded when it or one of its parent folders matches, the last
    matching pattern deciding."""

    def __init__(self, text):
        self.patterns = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = posixpath.normpath(line[1:].strip() if negated else line).lstrip("/")
            self.patterns.append((negated, pattern, re.compile(_pattern_regex(pattern))))

    @classmethod
    def of_context(cls, context):
        file = Path(context) / ".dockerignore"
        return cls(file.read_text() if file.exists() else "")

    def excludes(self, relative_path):
        path = posixpath.normpath(str(relative_path))
        parts = path.split("/")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        excluded = False
        for negated, _, regex in self.patterns:
            if any(regex.fullmatch(candidate) for candidate in candidates):
                excluded = not negated
        return excluded


def _pattern_regex(pattern):
    regex, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            regex += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            regex += ".*"
            i += 2
            continue
        if char == "*":
            regex += "[^/]*"
        elif char == "?":
            regex += "[^/]"
        elif char == "[":
            end = pattern.find("]", i)
            regex += pattern[i:end + 1] if end > i else re.escape(char)
            i = end if end > i else i
        else:
            regex += re.escape(char)
        i += 1
    return regex


def context_files(context, ignore):
    """Every file of the build context, relative to it, as Docker would send it."""
    context = Path(context)
    result = []
    for folder, dirs, files in os.walk(context):
        relative_folder = Path(folder).relative_to(context)
        # Excluded folders may still hold re-included files only with `!` patterns, which
        # deploy/'s .dockerignore does not use; pruning keeps the walk off build/.
        dirs[:] = [d for d in dirs if not ignore.excludes(relative_folder / d)
                   or any(negated for negated, _, _ in ignore.patterns)]
        for name in files:
            relative = relative_folder / name
            if not ignore.excludes(relative):
                result.append(relative)
    return result
