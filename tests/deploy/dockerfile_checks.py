"""Checks of deploy/docker/*.Dockerfile against this repository, this build and Debian 12's
apt. Each returns a list of problems (empty: fine), naming the line or program."""

from project import apt_closure, package_of


def copy_problems(dockerfile, ignore, context):
    problems = []
    names = [s.name for s in dockerfile.stages[:-1]]
    for stage in dockerfile.stages:
        for copy in stage.copies():
            if copy.from_stage is not None:
                if copy.from_stage not in names[:stage.index]:
                    problems.append(f"line {copy.line}: --from={copy.from_stage} is no earlier stage")
                continue
            for source in copy.sources:
                if source == ".":
                    continue
                path = context / source
                if not path.exists():
                    problems.append(f"line {copy.line}: {source} does not exist in the context")
                elif ignore.excludes(source.rstrip("/")):
                    problems.append(f"line {copy.line}: {source} is excluded by .dockerignore")
                elif path.is_dir() and not any(not ignore.excludes(f.relative_to(context))
                                               for f in path.rglob("*") if f.is_file()):
                    problems.append(f"line {copy.line}: {source} is empty once .dockerignore applies")
    return problems


def runtime_problems(dockerfile, linked_packages):
    """Packages of the apps' shared libraries that the final stage does not install (itself,
    as a dependency, or with the base image, approximated by apt's own closure)."""
    listed = tuple(sorted(set(dockerfile.final.apt_packages()) | {"apt"}))
    covered = apt_closure(listed)
    return sorted(set(linked_packages) - covered)


def program_problems(dockerfile, installed):
    """Programs in ENTRYPOINT and CMD, and the apps the final stage runs, that the image lacks:
    /usr/bin ones must come from a package the final stage installs, the others be in
    /usr/local/bin."""
    final = dockerfile.final
    packages = set(final.apt_packages())
    local_bin = dockerfile.local_bin(installed)
    programs = [w for w in dockerfile.command_line() if w != "--"]
    programs += [line.split()[0] for i in final.all("RUN") for line in i.text.split("&&")
                 if line.split() and line.split()[0].startswith("conductor")]
    problems = []
    for program in programs:
        if program.startswith("/usr/bin/"):
            owner = package_of(program)
            if owner not in packages:
                problems.append(f"{program}: its package ({owner}) is not installed by the final stage")
        elif program.removeprefix("/usr/local/bin/") not in local_bin:
            problems.append(f"{program}: not in the image's /usr/local/bin")
    return problems
