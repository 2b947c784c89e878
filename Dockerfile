# The course environment for grading a class with `dlcourse grade` in a container.
#
#   docker build -t dlcourse-grader .
#   docker run --rm -v "$PWD/class:/shared" dlcourse-grader \
#       grade /course/solutions/lab01_training_loop.py /shared/submissions --out /shared/out
#
# bubblewrap is installed ahead of the per-kernel sandbox the grader is gaining; today's `dlcourse grade` does
# not use it yet. Once it does, bubblewrap needs to create namespaces inside the container: with Docker that takes
# `--security-opt seccomp=unconfined --security-opt apparmor=unconfined --security-opt systempaths=unconfined`.
#
# CPU only by default: grades should not depend on the machine (the grader hides GPUs from kernels unless
# `--gpu`). A GPU image differs in one build argument, an index with CUDA builds of torch: PyPI's own Linux wheels
# are CUDA builds, or pick a CUDA version your driver supports from PyTorch's index (.../whl/cu126, ...):
#   docker build --build-arg TORCH_INDEX=https://pypi.org/simple -t dlcourse-grader:gpu .
# It runs with the NVIDIA container toolkit (`docker run --gpus all`, Kubernetes `nvidia.com/gpu: 1`, SLURM
# `--gres=gpu:1` with `apptainer run --nv`) and `dlcourse grade --gpu`. The CUDA libraries come with the torch
# wheels, so the base image stays python:3.11-slim (no CUDA base image needed).
FROM python:3.11-slim

# bubblewrap: `bwrap`, for the kernel sandbox. Nothing else from apt: the grader needs no compiler and no git.
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/course/.venv \
    PATH=/course/.venv/bin:$PATH
WORKDIR /course

# The same layout as `make lab`: a virtual environment in .venv with the course installed in editable mode, so
# dlcourse.__file__ is /course/dlcourse and the labs' sources are /course/solutions.
RUN python -m venv /course/.venv && pip install --quiet --upgrade "pip>=23.2"

# torch and torchvision first, from PyTorch's CPU index (PyPI's Linux wheels bring CUDA: gigabytes more); the
# install from pyproject.toml below then finds them satisfied.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --quiet --index-url "$TORCH_INDEX" torch torchvision

# The other dependencies, read from pyproject.toml (the one list of them), in a layer of their own so that editing
# the course does not download them again. EXTRAS: the extras the labs need, which are the learner's `lab` extra
# without JupyterLab, i.e. the topic extras that pyproject's `notebooks` extra groups (tests/test_container.py checks
# that they agree).
ARG EXTRAS=lora,export,llm,graphs,experiments,serving
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import os, tomllib; p = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']; \
print(*p['dependencies'], *(r for e in os.environ['EXTRAS'].split(',') for r in p['optional-dependencies'][e]), \
sep='\n')" > /tmp/requirements.txt \
    && pip install --quiet -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt /tmp/pyproject.toml

# The course itself (.dockerignore keeps .git, .venv, outputs and submissions out), installed as `make lab` does,
# with the `dlcourse` Jupyter kernel the grader starts. Owned by root: the grading user can read, not change it.
COPY . /course
RUN pip install --quiet -e ".[${EXTRAS}]" \
    && python -m ipykernel install --sys-prefix --name dlcourse --display-name "Python (dlcourse)" >/dev/null \
    && python -m compileall -q /course/dlcourse \
    && useradd --create-home --uid 1000 --user-group grader

# Grading runs as an ordinary user (kernels run labs at smoke scale whatever DLCOURSE_SCALE says).
USER grader
ENTRYPOINT ["dlcourse"]
CMD ["--help"]
