# syntax=docker/dockerfile:1
# Two images from one build (see docs/deploy.md):
#   docker build --target lambda -t objdet-lambda .   AWS Lambda container image (provided:al2023)
#   docker build --target server -t objdet-server .   the EC2/Docker variant: objdet serve on 0.0.0.0:$PORT
# Your own model instead of the bundled one (docs/deploy.md), in either image:
#   --build-arg MODEL=models/yours.onnx   any ONNX detector objdet reads (a file directly under models/)
#   --build-arg LABELS=models/yours.txt   class names, if the model's metadata has none
#                                         (default: models/yours.labels.txt when it exists)
#   --build-arg SELFTEST_EXPECT=label     a class the build's self-test must find in the bundled
#                                         photo (default: "person" for the bundled model, none else)
# Multi-arch: --platform linux/amd64 (default) or linux/arm64 (Graviton).
#
# Builder: the official Rust image on Debian bookworm. Its glibc is 2.36, but the release binaries
# only reference symbols up to GLIBC_2.34 (AL2023's glibc), which `make check-glibc` verifies in CI;
# the same binaries then run on the Lambda base image (AL2023) and on the slim server image.

# ---- ONNX Runtime shared library: the same pinned PyPI wheel as `make setup` --------------------
FROM --platform=$BUILDPLATFORM public.ecr.aws/docker/library/python:3.11-slim-bookworm AS ort
ARG TARGETARCH
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
RUN case "${TARGETARCH:-amd64}" in arm64) arch=aarch64 ;; *) arch=x86_64 ;; esac \
 && ORT_ARCH="$arch" OBJDET_CACHE=/cache scripts/setup.sh ort \
 && mkdir -p /opt/onnxruntime/lib \
 && cp -P /cache/ort/libonnxruntime.so* /opt/onnxruntime/lib/

# ---- release binaries: objdet (CLI + server) and bootstrap (Lambda, without the CLI's client) ---
FROM public.ecr.aws/docker/library/rust:1.95-slim-bookworm AS builder
# nasm: libjpeg-turbo's SIMD in the JPEG decoder (mozjpeg-sys; without it, plain C, half as fast).
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends nasm && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY assets/selftest.jpg assets/selftest.jpg
COPY benches benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin objdet \
 && cargo build --release --locked --no-default-features --bin bootstrap \
 && mkdir -p /out \
 && cp target/release/objdet target/release/bootstrap /out/

# ---- the model: models/$MODEL and its labels, laid out as /opt/models/<name>[.labels.txt] --------
FROM public.ecr.aws/docker/library/debian:bookworm-slim AS model
ARG MODEL=models/centernet_mobilenetv3_coco.onnx
ARG LABELS=
COPY models/ /context/models/
RUN set -eu; \
    case "$MODEL" in models/*/*|*[!A-Za-z0-9._/-]*) bad=1 ;; models/*.onnx) bad= ;; *) bad=1 ;; esac; \
    if [ -n "$bad" ]; then echo "MODEL=$MODEL: give an .onnx file directly under models/" >&2; exit 1; fi; \
    name=$(basename "$MODEL" .onnx); mkdir -p /opt/models; \
    cp "/context/$MODEL" "/opt/models/$name.onnx"; \
    labels=${LABELS:-models/$name.labels.txt}; \
    if [ -f "/context/$labels" ]; then cp "/context/$labels" "/opt/models/$name.labels.txt"; \
    elif [ -n "$LABELS" ]; then echo "LABELS=$LABELS is not in the build context" >&2; exit 1; fi

# ---- Lambda: provided:al2023 runs ${LAMBDA_RUNTIME_DIR}/bootstrap --------------------------------
FROM public.ecr.aws/lambda/provided:al2023 AS lambda
# libonnxruntime.so links libstdc++ and libgcc_s, which the minimal base does not promise.
# hadolint ignore=DL3041
RUN microdnf install -y libstdc++ libgcc \
 && microdnf clean all
ARG MODEL=models/centernet_mobilenetv3_coco.onnx
ARG SELFTEST_EXPECT=auto
COPY --from=ort /opt/onnxruntime/lib /opt/onnxruntime/lib
COPY --from=model /opt/models /opt/models
COPY --from=builder /out/bootstrap ${LAMBDA_RUNTIME_DIR}/bootstrap
# The image works without the template: behind a REST API stage (/Prod/api/detect) the bootstrap
# routes /api/detect by itself (src/lambda.rs, `routed`).
ENV ORT_DYLIB_PATH=/opt/onnxruntime/lib/libonnxruntime.so \
    MODEL_PATH=/opt/${MODEL} \
    LOG_FORMAT=json
# The image proves it starts: ONNX Runtime and the model load, the bundled photo is detected and
# the model's output decodes (a missing library or an unusable model fails this build, not the
# first invocation). SELFTEST_EXPECT (a build argument, so in RUN's environment) names a class the
# photo must hold.
RUN ["/var/runtime/bootstrap", "--self-test"]
# The entry point: the base image hands CMD to bootstrap as _HANDLER. template.yaml sets it per
# function with ImageConfig.Command (http: API Gateway; s3: the upload trigger).
CMD ["http"]

# ---- EC2/Docker server --------------------------------------------------------------------------
FROM public.ecr.aws/docker/library/debian:bookworm-slim AS server
# ca-certificates: TLS to S3 when the server is given a bucket. Versions follow the pinned base image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 objdet \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin objdet
ARG MODEL=models/centernet_mobilenetv3_coco.onnx
ARG SELFTEST_EXPECT=auto
COPY --from=ort /opt/onnxruntime/lib /opt/onnxruntime/lib
COPY --from=model /opt/models /opt/models
COPY --from=builder /out/objdet /usr/local/bin/objdet
ENV HOST=0.0.0.0 \
    PORT=5000 \
    ORT_DYLIB_PATH=/opt/onnxruntime/lib/libonnxruntime.so \
    MODEL_PATH=/opt/${MODEL} \
    ORT_OPTIMIZED_MODEL_PATH=/tmp/objdet-optimized.onnx \
    LOG_FORMAT=json
USER 10001:10001
# The image proves it starts (as its user, with its environment).
RUN ["objdet", "self-test"]
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["objdet", "health"]
ENTRYPOINT ["objdet"]
CMD ["serve"]
