"""Example messages in wire form (camelCase JSON), written by hand: the source of ``fixtures/valid.json``.

Every method has at least one example; the generator checks each against ``spec.py`` (required fields
present, types right) and wraps it in JSON-RPC envelopes. The invalid fixtures are derived from these.
Numbers the spec types ``number`` are written as floats (``60.0``): that is how Python peers send them.
"""

from __future__ import annotations

from typing import Any

_SUMMARY_RUNNING: dict[str, Any] = {
    "id": 14, "kind": "experiment", "status": "running",
    "description": "raise the learning rate to 3e-3 and warm up for 200 steps",
    "commit": "5f3c2a1e9b7d4c6a8e0f1b2c3d4e5f6a7b8c9d0e", "agent": "claude", "created": 1764230400.25,
}
_SUMMARY_KEPT: dict[str, Any] = {
    "id": 14, "kind": "experiment", "status": "keep",
    "description": "raise the learning rate to 3e-3 and warm up for 200 steps",
    "valBpb": 1.4823, "delta": -0.0131, "commit": "5f3c2a1e9b7d4c6a8e0f1b2c3d4e5f6a7b8c9d0e",
    "agent": "claude", "created": 1764230400.25, "finished": 1764230540.5, "review": "accepted",
}
_SUMMARY_BASELINE: dict[str, Any] = {
    "id": 1, "kind": "baseline", "status": "keep", "description": "baseline (3 runs: the noise floor)",
    "valBpb": 1.4954, "commit": "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567", "agent": "loop",
    "created": 1764229000.0, "finished": 1764229200.0,
}
_SUMMARY_CRASH: dict[str, Any] = {
    "id": 15, "kind": "experiment", "status": "crash", "description": "swap LayerNorm for RMSNorm",
    "agent": "sweep", "created": 1764230600.0, "finished": 1764230610.0,
}
_STATUS_IDLE: dict[str, Any] = {
    "state": "idle", "agent": "sweep", "budget": 60.0, "clock": "auto", "experiments": 0, "kept": 0,
    "protocolVersion": "1.5",
}
_STATUS_RUNNING: dict[str, Any] = {
    "state": "running", "tag": "nov27", "agent": "claude", "budget": 300.0, "clock": "wall", "sigma": 0.0021,
    "best": {"id": 12, "valBpb": 1.4954}, "current": _SUMMARY_RUNNING, "experiments": 13, "kept": 2,
    "live": {"experimentId": 14, "run": 0, "runsPlanned": 2,
             "curve": [[0, 0.0, 5.551], [100, 19.6, 2.412], [200, 39.1, 1.903]]},
    "protocolVersion": "1.5", "phase": "training", "sealed": True,
}
_STATUS_PAUSED: dict[str, Any] = {
    "state": "paused", "tag": "nov27", "agent": "claude", "budget": 300.0, "clock": "wall", "sigma": 0.0021,
    "best": {"id": 14, "valBpb": 1.4823}, "experiments": 14, "kept": 3,
    "message": "paused by the user: trying the tokenizer change myself", "protocolVersion": "1.5",
    "sealed": True, "transferRatio": 0.71,
    "flags": ["#13 is held for you: val improved but the holdout got worse beyond noise: holdout 1.5011 → 1.5102"],
}
_STATUS_REPORTED: dict[str, Any] = {
    "state": "running", "tag": "autoresearch", "agent": "claude", "budget": 300.0, "clock": "wall",
    "experiments": 4, "kept": 1, "protocolVersion": "1.5", "sealed": True, "reportedMetric": "val_bpb",
}
_STATUS_OVERLAPPING: dict[str, Any] = {
    **_STATUS_RUNNING, "current": {**_SUMMARY_RUNNING, "id": 15, "description": "swap LayerNorm for RMSNorm"},
    "live": {"experimentId": 15, "run": 0, "runsPlanned": 2, "curve": [[0, 0.0, 5.548]]}, "phase": "starting",
    "protocolVersion": "1.5",
    "alsoInFlight": [{"experiment": _SUMMARY_RUNNING, "runsPlanned": 2, "phase": "evaluating"}],
}
_STATUS_STOPPING: dict[str, Any] = {
    **_STATUS_RUNNING, "state": "stopping", "message": "stopping after #14",
}
_HUNK: dict[str, Any] = {
    "id": "h-14-1",
    "range": {"start": {"line": 41, "character": 0}, "end": {"line": 42, "character": 0}},
    "oldText": "learning_rate = 1e-3  # peak LR\n",
    "newText": "learning_rate = 3e-3  # peak LR\nwarmup_steps = 200\n",
    "experimentIds": [14], "evidence": "#14: 1.4954 → 1.4823 bpb, 6.2σ",
}
_SUGGESTION: dict[str, Any] = {
    "id": "s-14", "uri": "file:///home/ada/proj/train.py", "experimentIds": [14], "hunks": [_HUNK],
    "evidence": "-0.0131 bpb (6.2 sigma) over 2 runs, confirmed on a second seed",
    "state": "pending",
}

_IDEAS: dict[str, Any] = {
    "tag": "nov27", "policy": "not-vetoed", "plateauAfter": 5,
    "ideas": [
        {"id": 3, "direction": "optimizer", "text": "raising LR improves the metric within the fixed budget",
         "source": "agent", "state": "approved", "experimentIds": [14]},
        {"id": 4, "direction": "optimizer", "text": "lowering WEIGHT_DECAY improves the metric within the fixed budget",
         "source": "agent", "state": "proposed", "experimentIds": []},
        {"id": 5, "direction": "model size", "text": "doubling N_LAYER", "source": "agent", "state": "vetoed",
         "reason": "too slow for this budget", "experimentIds": []},
        {"id": 6, "direction": "yours", "text": "try a cosine schedule", "source": "human", "state": "approved",
         "experimentIds": []},
    ],
    "directions": [
        {"name": "optimizer", "state": "pinned", "ideas": 2, "tries": 1, "keeps": 1, "gain": 0.0131, "plateau": False},
        {"name": "model size", "state": "open", "ideas": 1, "tries": 5, "keeps": 0, "gain": 0.0, "plateau": True},
        {"name": "yours", "state": "open", "ideas": 1, "tries": 0, "keeps": 0, "gain": 0.0, "plateau": False},
    ],
}

EXAMPLES: list[dict[str, Any]] = [
    {"method": "overnight/status", "params": {}, "result": _STATUS_IDLE},
    {"method": "overnight/status", "params": {}, "result": _STATUS_RUNNING},
    {"method": "overnight/status", "params": {}, "result": _STATUS_REPORTED},
    {"method": "overnight/status", "params": {}, "result": _STATUS_OVERLAPPING},
    {"method": "overnight/ideas/list", "params": {}, "result": _IDEAS},
    {"method": "overnight/ablate", "params": {"dryRun": True}, "result": {
        "changes": 3, "runs": 8, "seconds": 576.0,
        "message": "an ablation of 3 kept changes would take at most 8 runs, about 10 min"}},
    {"method": "overnight/ablate", "params": {"runs": 3}, "result": {
        "changes": 3, "runs": 12, "seconds": 864.0,
        "message": "ablating 3 kept changes after the experiment in flight: at most 12 runs, about 14 min"}},
    {"method": "overnight/ideas/add", "params": {"text": "try a cosine schedule"}, "result": _IDEAS},
    {"method": "overnight/ideas/add", "params": {"text": "wider MLP", "direction": "model size"}, "result": _IDEAS},
    {"method": "overnight/ideas/curate", "params": {"action": "veto", "id": 5, "reason": "too slow for this budget"},
     "result": _IDEAS},
    {"method": "overnight/ideas/curate", "params": {"action": "move", "id": 6, "index": 0}, "result": _IDEAS},
    {"method": "overnight/ideas/curate", "params": {"action": "pin", "direction": "optimizer"}, "result": _IDEAS},
    {"method": "overnight/ideasChanged", "params": _IDEAS},
    {"method": "overnight/pause", "params": {"reason": "trying the tokenizer change myself"}, "result": _STATUS_PAUSED},
    {"method": "overnight/pause", "params": {}, "result": {**_STATUS_PAUSED, "message": "paused by the user"}},
    {"method": "overnight/resume", "params": {}, "result": {**_STATUS_PAUSED, "state": "proposing",
                                                             "message": "claude is proposing"}},
    {"method": "overnight/stop", "params": {"when": "afterCurrent"}, "result": _STATUS_STOPPING},
    {"method": "overnight/stop", "params": {"when": "now"}, "result": {**_STATUS_RUNNING, "state": "stopped",
                                                                        "message": "stopped by the user"}},
    {"method": "overnight/redirect", "params": {"instruction": "stop tuning the LR; try the attention layout"},
     "result": {"feedbackId": 7}},
    {"method": "overnight/setBudget", "params": {"seconds": 120.0},
     "result": {**_STATUS_RUNNING, "message": "budget 120 s from the next session"}},
    {"method": "overnight/setBudget", "params": {"seconds": 600.0, "tag": "nov27-long"}, "result": _STATUS_STOPPING},
    {"method": "overnight/experiments/list", "params": {"offset": 0, "limit": 50},
     "result": {"total": 3, "items": [_SUMMARY_CRASH, _SUMMARY_KEPT, _SUMMARY_BASELINE]}},
    {"method": "overnight/experiments/list", "params": {"offset": 50, "limit": 50, "status": ["keep", "discard"]},
     "result": {"total": 2, "items": []}},
    {"method": "overnight/experiments/get", "params": {"id": 14}, "result": {
        "experiment": _SUMMARY_KEPT,
        "hypothesis": "the loss is still falling steeply at the end: the LR is too low for a 300 s budget",
        "reasoning": "#9 (2e-3) helped by 0.006; the curve suggests more headroom",
        "diff": "--- a/train.py\n+++ b/train.py\n@@ -42 +42,2 @@\n-learning_rate = 1e-3  # peak LR\n"
                "+learning_rate = 3e-3  # peak LR\n+warmup_steps = 200\n",
        "decisionReason": "-0.0131 clears 2 sigma (0.0042); confirmed on seed 1401",
        "decidedBy": "keep rule",
        "evidence": {"runs": [1.4819, 1.4827], "incumbent": [1.4954], "sigma": 0.0021, "incumbent_id": 12},
        "holdoutBpb": 1.4871, "oodBpb": 2.0121,
        "runs": [
            {"run": 0, "seed": 1400, "status": "ok", "valBpb": 1.4819, "holdoutBpb": 1.4866, "oodBpb": 2.0113,
             "trainBpb": 1.4702, "stepsPlanned": 1530, "cpuSeconds": 301.7,
             "checks": {"causal": {"ok": True, "max_change": 0.0}, "batch": {"ok": True, "max_change": 0.0}},
             "flags": [], "steps": 1530,
             "tokens": 12533760, "tokensPerS": 41779.2, "nParams": 11240448, "device": "cuda", "peakMemMb": 5123.5,
             "trainSeconds": 300.0, "wallSeconds": 331.2,
             "curve": [[0, 0.0, 5.545], [500, 98.1, 2.101], [1000, 196.4, 1.792], [1530, 300.0, 1.688]],
             "started": 1764230401.0, "finished": 1764230470.0},
            {"run": 1, "seed": 1401, "status": "ok", "valBpb": 1.4827, "curve": [[0, 0.0, 5.551]],
             "started": 1764230471.0, "finished": 1764230540.0},
            {"run": 2, "seed": 1401, "status": "starved", "error": "the machine gave it too little CPU", "curve": [],
             "started": 1764230541.0, "finished": 1764230900.0},
        ],
    }},
    {"method": "overnight/experiments/get", "params": {"id": 15}, "result": {
        "experiment": _SUMMARY_CRASH, "hypothesis": "", "reasoning": "", "diff": "",
        "decisionReason": "run 1 crash", "decidedBy": "loop",
        "error": "RuntimeError: expected scalar type Float but found Half",
        "runs": [{"run": 0, "seed": 1500, "status": "crash", "error": "RuntimeError: expected scalar type Float",
                  "logTail": "Traceback (most recent call last):\n  ...", "curve": [],
                  "started": 1764230601.0, "finished": 1764230610.0}],
    }},
    {"method": "overnight/shutdown", "params": {}, "result": {}},
    {"method": "overnight/suggestions/list", "params": {}, "result": {"items": [_SUGGESTION]}},
    {"method": "overnight/suggestions/list", "params": {"uri": "file:///home/ada/proj/model.py"},
     "result": {"items": []}},
    {"method": "overnight/suggestions/accept", "params": {"id": "s-14"}, "result": {"applied": True}},
    {"method": "overnight/suggestions/accept", "params": {"id": "s-14", "hunkId": "h-14-1"},
     "result": {"applied": False, "message": "the editor refused the edit: the document changed"}},
    {"method": "overnight/suggestions/reject", "params": {"id": "s-14", "reason": "warmup belongs in the scheduler"},
     "result": {}},
    {"method": "overnight/suggestions/reject", "params": {"id": "s-14", "hunkId": "h-14-1"}, "result": {}},
    {"method": "overnight/loopStateChanged", "params": _STATUS_RUNNING},
    {"method": "overnight/loopStateChanged", "params": _STATUS_IDLE},
    {"method": "overnight/experimentStarted", "params": {"experiment": _SUMMARY_RUNNING, "runsPlanned": 2}},
    {"method": "overnight/progress", "params": {"experimentId": 14, "run": 0, "step": 500, "elapsed": 98.1,
                                                "budget": 300.0, "trainLoss": 2.101, "tokensPerS": 41779.2}},
    {"method": "overnight/progress", "params": {"experimentId": 14, "run": 1, "step": 0, "elapsed": 0.0,
                                                "budget": 300.0, "trainLoss": 5.551}},
    {"method": "overnight/experimentFinished", "params": {"experiment": _SUMMARY_KEPT}},
    {"method": "overnight/experimentFinished", "params": {"experiment": _SUMMARY_CRASH}},
    {"method": "overnight/suggestionAdded", "params": {"suggestion": _SUGGESTION}},
    {"method": "overnight/suggestionRemoved", "params": {"id": "s-14", "state": "expired",
                                                         "reason": "you changed lines 40-44 yourself"}},
    {"method": "overnight/agentThought", "params": {"text": "The loss curve of #12 is still falling", "done": False}},
    {"method": "overnight/agentThought", "params": {"experimentId": 14, "text": ".", "done": True}},
]

# The connection's own messages (standard LSP methods carrying Overnight's types).
INITIALIZATION_OPTIONS: dict[str, Any] = {"token": "q3Jx0tE8mC5vW1yZ7hK2pL9sN4bR6dF0", "protocolVersion": "1.5",
                                          "commandLinks": True, "showMessages": False}
SERVER_INFO_OVERNIGHT: dict[str, Any] = {"protocolVersion": "1.5"}
