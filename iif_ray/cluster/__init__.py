"""Running ``iif-ray`` commands on a Ray cluster as Ray jobs (the Ray Jobs client side).

Cluster definitions (launcher YAML, KubeRay manifests) live in the top-level ``cluster/``.
"""
