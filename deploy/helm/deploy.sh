#!/usr/bin/env bash
# Deploys the platform to the current kubectl context with Helm: Kafka, every service
# (services/*/main.py, each with deploy/helm/values/<name>.yaml) and the gateway with the
# repository's route table. The Secrets the values files name must exist first
# (deploy/helm/README.md).
#
#   deploy/helm/deploy.sh [-n NAMESPACE] [-t TAG] [-r REGISTRY] [--render DIR]
#
# -t: the image tag (kfm/<name>:TAG, default dev). -r: pull REGISTRY/<name>:TAG instead (e.g.
# ghcr.io/acme/kfm). --render DIR: write each release's manifests to DIR/<name>.yaml with
# `helm template` instead of installing (no cluster needed).
# HELM: the helm binary (default: helm on PATH; `python -m devinfra.tools path helm` builds one).
set -euo pipefail

cd "$(dirname "$0")/../.."
namespace=default tag=dev registry='' render=''
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--namespace) namespace=$2; shift 2 ;;
    -t|--tag) tag=$2; shift 2 ;;
    -r|--registry) registry=${2%/}; shift 2 ;;
    --render) render=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "deploy.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
helm=${HELM:-helm}

# The image arguments of service or gateway NAME.
image() {
  printf '%s\n' --set-string "image.tag=$tag"
  if [ -n "$registry" ]; then printf '%s\n' --set-string "image.repository=$registry/$1"; fi
}

# release CHART VALUES [helm arguments...]
release() {
  local name=$1 chart=$2; shift 2
  if [ -n "$render" ]; then
    mkdir -p "$render"
    "$helm" template "$name" "deploy/helm/$chart" --namespace "$namespace" \
      --kube-version "${KUBE_VERSION:-1.30.0}" "$@" > "$render/$name.yaml"
  else
    echo "deploy.sh: $name" >&2
    "$helm" upgrade --install "$name" "deploy/helm/$chart" --namespace "$namespace" \
      --create-namespace --wait --timeout 10m "$@"
  fi
}

release kafka kafka -f deploy/helm/values/kafka.yaml
# auth first: the others verify tokens with its keys.
services=$(for main in services/*/main.py; do basename "$(dirname "$main")"; done \
  | sort | awk '$0 == "auth" { print; next } { rest = rest $0 "\n" } END { printf "%s", rest }')
for name in $services; do
  values=deploy/helm/values/$name.yaml
  [ -f "$values" ] || { echo "deploy.sh: $values is missing" >&2; exit 1; }
  mapfile -t args < <(image "$name")
  release "$name" service -f "$values" "${args[@]}"
done
mapfile -t args < <(image gateway)
release gateway gateway -f deploy/helm/values/gateway.yaml "${args[@]}" \
  --set-file routes=gateway/routes.toml
