#!/usr/bin/env bash
# Builds the server image and pushes it to the ECR repository of the EC2 variant of stack STACK.
# The instance retries its pull every 30 s, so it starts serving shortly after the push.
# Usage: scripts/push-server.sh STACK [PLATFORM]   (needs Docker and AWS credentials)
set -euo pipefail
STACK=${1:?usage: push-server.sh STACK [PLATFORM]}
PLATFORM=${2:-linux/amd64}
TAG=${IMAGE_TAG:-v1}  # the stack runs Ec2ImageTag (tags are immutable: a new version, a new tag)
repo=$(aws cloudformation describe-stacks --stack-name "$STACK" \
  --query "Stacks[0].Outputs[?OutputKey=='Ec2ServerRepositoryUri'].OutputValue" --output text)
[ -n "$repo" ] && [ "$repo" != "None" ] || { echo "stack $STACK has no EC2 variant (DeployEc2=false?)" >&2; exit 1; }
registry=${repo%%/*}
aws ecr get-login-password | docker login --username AWS --password-stdin "$registry"
docker build --platform "$PLATFORM" --target server -t "$repo:$TAG" "$(dirname "$0")/.."
docker push "$repo:$TAG"
echo "pushed $repo:$TAG"
