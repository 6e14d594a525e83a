"""Kubeflow Pipelines glue: params.yaml <-> pipeline parameters, compile, submit, run locally.

The component definitions live in ``components/`` and the wiring in ``pipelines/`` at the root
of the checkout (the design card's layout); this package holds everything reusable that the CLI
imports (and that the components import inside the container, where the package is installed):

- :mod:`.parameters`: one typed pipeline parameter per params.yaml key, generated from the schema,
  and their decoding + validation (no kfp import);
- :mod:`.runtime`: helpers the component bodies call inside their pods (no kfp import);
- :mod:`.settings`: cluster settings (image, secrets, GPUs, PVC) as one dataclass;
- :mod:`.project`: finds and imports ``components/`` and ``pipelines/`` from the checkout;
- :mod:`.compile`, :mod:`.submit`, :mod:`.local`: the three ``semidisent pipeline`` commands.

Only :mod:`.compile`, :mod:`.submit`, :mod:`.local` and :mod:`.k8s` import kfp (or the
``components/`` / ``pipelines/`` files, which do), inside functions, so ``semidisent --help``
never pays for it.
"""
