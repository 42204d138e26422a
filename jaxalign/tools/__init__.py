"""Sandboxed execution of model-written Python for tool-integrated RL.

    from jaxalign.tools import PythonSandbox
    with PythonSandbox(timeout_s=5.0) as sb:
        sb.run("print(1 + 1)").stdout          # "2\\n", clean interpreter per call
        with sb.session() as s:                # stateful, one per trajectory
            s.run("x = 3"); s.run("x * 2")     # stdout "6\\n"
"""

from jaxalign.tools.results import SandboxResult, SandboxUnavailableError
from jaxalign.tools.sandbox import PythonSandbox, SandboxSession

__all__ = ["PythonSandbox", "SandboxResult", "SandboxSession", "SandboxUnavailableError"]
