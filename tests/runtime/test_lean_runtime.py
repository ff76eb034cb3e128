"""The runtime deploys without torch: ``python -m runtime.webcam`` on the tiny engines with torch/transformers blocked.

``pytest tests/runtime/test_lean_runtime.py -s``. A subprocess installs an import hook that makes importing torch,
transformers, onnx (the exporter's), the reference package or the exporter raise, then runs the webcam CLI headless
over a video file through ONNX Runtime. The run must succeed and print its events; the hook also reports every
blocked attempt, so an import that is caught and ignored somewhere would still fail the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from runtime.sources import write_sample_video

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "transformers", "onnx", "mobile_videogpt", "export", "safetensors")

RUNNER = """
import runpy, sys
BLOCKED = {blocked!r}
attempts = []
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempts.append(name)
            raise ImportError(f"{{name}} is blocked: the lean runtime must not import it")
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["runtime.webcam", *{argv!r}]
try:
    runpy.run_module("runtime.webcam", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("LEAN-CHECK " + __import__("json").dumps({{"attempts": attempts, "loaded": loaded, "code": code}}), file=sys.stderr)
sys.exit(code)
"""


def test_webcam_runs_on_onnxruntime_with_torch_blocked(exported_tiny: Path, tmp_path: Path) -> None:
    video = write_sample_video(tmp_path / "clip.mp4", duration_s=3.6)
    argv = ["--engines", str(exported_tiny), "--backend", "onnxruntime", "--source", str(video), "--headless", "--jsonl",
            "--no-paced", "--set", "policy.every_n.n=1", "--set", "generation.max_new_tokens=3"]
    script = RUNNER.format(blocked=BLOCKED, argv=argv)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    check = json.loads(done.stderr.split("LEAN-CHECK ", 1)[1].splitlines()[0])
    print(f"exit {done.returncode}; blocked import attempts: {check['attempts']}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert check == {"attempts": [], "loaded": [], "code": 0}
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [e["type"] for e in events if e["type"] == "window_decided"] == ["window_decided"] * 2
    assert any(e["type"] == "feedback_finished" for e in events)
