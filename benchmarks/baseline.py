"""Another commit's fastnet, importable beside this one, for side-by-side A/B timing.

    from baseline import load_baseline
    base = load_baseline("HEAD~3")    # a module named fastnet_<sha>, with its own kernels

The files of ``fastnet/`` and ``kernels/`` at that commit (``git show``) are
written once to ``$TMPDIR/fastnet-baselines/<sha>/``, as a package
``fastnet_<sha>`` whose kernels are its ``kernels`` subpackage (as
``pyproject.toml`` installs them), with every ``fastnet`` import renamed.  Its
compiled kernels are cached beside it by numba, apart from this checkout's.
``latency.py --baseline REV`` and ``jit_vs_numpy.py --baseline REV`` time
it in the same process as the working tree, alternating.
"""

import importlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _git(*args):
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, check=True).stdout


def patched(rev, patch):
    """A commit (its sha) of ``rev`` with ``patch`` (a ``git diff`` file) applied,
    made in a scratch index: no branch, working tree or index of the checkout
    is touched.  The same rev and patch give the same commit's tree."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": os.path.join(tmp, "index")}

        def git(*args):
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, check=True,
                                  env=env).stdout.decode().strip()

        git("read-tree", rev)
        git("apply", "--cached", str(Path(patch).resolve()))
        tree = git("write-tree")
        return git("commit-tree", tree, "-p", git("rev-parse", rev), "-m", f"{rev} with {Path(patch).name}")


def load_baseline(rev, patch=None):
    """Import ``fastnet`` as of commit ``rev`` (a name git understands), with
    ``patch`` applied when given (``patched``), as ``fastnet_<sha>``."""
    sha = _git("rev-parse", "--short=10", patched(rev, patch) if patch else rev).decode().strip()
    name = f"fastnet_{sha}"
    root = Path(tempfile.gettempdir()) / "fastnet-baselines" / sha
    if not (root / name / "__init__.py").exists():
        files = _git("ls-tree", "-r", "--name-only", sha, "--", "fastnet", "kernels").decode().split()
        rename = re.compile(r"\bfastnet(?=[.\s\"'])")
        for path in files:
            if not path.endswith(".py"):
                continue
            text = rename.sub(name, _git("show", f"{sha}:{path}").decode())
            dest = root / name / (path.split("/", 1)[1] if path.startswith("fastnet/") else path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module(name)
    module.baseline_rev = f"{rev}{' with ' + Path(patch).name if patch else ''} ({sha})"
    return module


if __name__ == "__main__":
    base = load_baseline(sys.argv[1] if len(sys.argv) > 1 else "HEAD")
    print(base.__name__, os.path.dirname(base.__file__))
