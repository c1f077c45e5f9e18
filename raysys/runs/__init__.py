"""Run tracking: what makes a run resumable and its outputs safe. Run keys (keys.py), the
part files of a run on an actor pool (parts.py) and a loop's or experiment's work dir
(workdir.py). Knows nothing of Ray's APIs."""
