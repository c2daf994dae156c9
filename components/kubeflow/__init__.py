"""The Kubeflow pipeline's Python side (the pipeline itself is ``infra/kubeflow/pipeline.py``).

    rayjob.py   a KubeRay RayJob: its body from a template, its creation and polling (the kubernetes client)
    steps.py    preflight, tune, run (local Ray or RayJob) and publish as plain functions over paths

Nothing is imported here, as in ``components``: the kubernetes client is needed only by mode=rayjob, and
``steps`` loads the benchmark's stack (torch, Ray), which ``rayjob`` alone does not need.
"""
