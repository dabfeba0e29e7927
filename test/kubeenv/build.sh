#!/usr/bin/env bash
# Builds the Kubernetes test binaries (etcd, kube-apiserver, kube-controller-manager, kubectl,
# helm) from the Go modules in this folder, into a cache outside the source tree:
#   ${KNFLOW_KUBEENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/knflow/kubeenv}/<key>/bin
# <key> names the versions and hashes versions.env, the go.mod/go.sum files, the Go version and
# this script's build flags, so changing any of them builds into a fresh folder. Idempotent: a
# binary that is there is not built again, and when all are there it returns at once. The last
# line on stdout is the bin folder.
#
#   build.sh            build what is missing, print the bin folder
#   build.sh --print    print the bin folder without building; exit 1 if a binary is missing
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

# Never fetch another toolchain; use the module versions go.sum pins; strip paths and symbols.
export GOTOOLCHAIN=local
export GOFLAGS="-trimpath -buildvcs=false -mod=readonly"
ldflags='-s -w'
build_format=2 # bump when the way binaries are built changes

# name, module folder (relative to here), package, version flavour (see version_ldflags)
binaries=(
  "etcd etcd go.etcd.io/etcd/server/v3 -"
  "kube-apiserver . k8s.io/kubernetes/cmd/kube-apiserver k8s"
  "kube-controller-manager . k8s.io/kubernetes/cmd/kube-controller-manager k8s"
  "kubectl . k8s.io/kubernetes/cmd/kubectl k8s"
  "helm helm helm.sh/helm/v3/cmd/helm helm"
)

# The version stamps the projects' own Makefiles set with -X (a plain `go build` would report
# v0.0.0-master, which clients such as helm compare against). etcd's version is a constant.
version_ldflags() {
  local x minor
  case $1 in
  k8s)
    minor=${KUBERNETES_VERSION#v1.}
    minor=${minor%%.*}
    for x in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
      printf ' -X %s' "$x.gitVersion=$KUBERNETES_VERSION" "$x.gitMajor=1" "$x.gitMinor=$minor" \
        "$x.gitTreeState=clean"
    done
    ;;
  helm)
    # helm's default Kubernetes version for templates is that of the client-go it is built with.
    minor=$(awk '$1 == "k8s.io/client-go" { split($2, v, "."); print v[2] }' "$here/helm/go.mod")
    printf ' -X %s' "helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
      "helm.sh/helm/v3/internal/version.gitTreeState=clean" \
      "helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1" \
      "helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor" \
      "helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1" \
      "helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
    ;;
  esac
}

# Go comes with the machine image (/usr/local/go); Debian 12's golang-go (1.19) is too old.
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then PATH=/usr/local/go/bin:$PATH; fi
command -v go >/dev/null || { echo "kubeenv: needs Go >= 1.26 (go.mod files here), none found" >&2; exit 1; }
go_version=$(go version)
hash=$(cd "$here" && {
  cat versions.env go.mod go.sum etcd/go.mod etcd/go.sum helm/go.mod helm/go.sum
  echo "$go_version $GOFLAGS $ldflags $build_format"
} | sha256sum | cut -c1-12)
key="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_${hash}"
root=${KNFLOW_KUBEENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/knflow/kubeenv}
bin=$root/$key/bin

complete() {
  local b
  for b in "${binaries[@]}"; do
    read -r name _ <<<"$b"
    [[ -x $bin/$name ]] || return 1
  done
}

if [[ ${1:-} == --print ]]; then
  echo "$bin"
  complete
  exit
fi
if complete; then
  echo "kubeenv: all binaries cached"
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
# One build at a time per cache folder; a second caller waits, then finds the binaries there.
exec 9>"$root/$key/.lock"
if ! flock -n 9; then
  echo "kubeenv: another build.sh is building into $root/$key; waiting"
  flock 9
fi
rm -f "$bin"/.*.tmp.* # left by an interrupted build
cat >"$root/$key/versions.txt" <<INFO
kubernetes $KUBERNETES_VERSION
etcd $ETCD_VERSION
helm $HELM_VERSION
$go_version
GOFLAGS=$GOFLAGS ldflags=$ldflags
INFO

echo "kubeenv: building into $bin"
echo "kubeenv: the first build on a machine takes 10 to 20 minutes on 2 cores and about 5 GB"
echo "kubeenv: (downloads, Go build cache); later builds reuse Go's build cache, $(go env GOCACHE)"
total_start=$SECONDS
beat=""
trap '[[ -z $beat ]] || kill "$beat" 2>/dev/null' EXIT
trap 'exit 130' INT TERM
for b in "${binaries[@]}"; do
  read -r name dir pkg flavour <<<"$b"
  if [[ -x $bin/$name ]]; then
    echo "kubeenv: $name cached"
    continue
  fi
  echo "kubeenv: building $name ($pkg)"
  start=$SECONDS
  # A heartbeat, so that a long cold build visibly makes progress.
  # On TERM it ends its sleep too, which would otherwise hold stdout open for up to a minute.
  (
    trap 'kill "$nap" 2>/dev/null; exit 0' TERM
    while :; do
      sleep 60 &
      nap=$!
      wait "$nap"
      echo "kubeenv:   ... still building $name ($((SECONDS - start)) s)"
    done
  ) &
  beat=$!
  tmp="$bin/.$name.tmp.$$"
  status=0
  (cd "$here/$dir" && go build -ldflags="$ldflags$(version_ldflags "$flavour")" -o "$tmp" "$pkg") || status=$?
  kill "$beat" 2>/dev/null || true
  wait "$beat" 2>/dev/null || true
  beat=""
  if ((status != 0)); then
    rm -f "$tmp"
    echo "kubeenv: building $name failed (exit $status)" >&2
    exit "$status"
  fi
  mv -f "$tmp" "$bin/$name" # atomic: a half-built binary never has the final name
  echo "kubeenv: built $name in $((SECONDS - start)) s ($(du -h "$bin/$name" | cut -f1))"
done
echo "kubeenv: all binaries built in $((SECONDS - total_start)) s"
for old in "$root"/*/; do
  [[ $old == "$root/$key/" ]] || echo "kubeenv: an older build can be deleted: ${old%/}"
done
echo "$bin"
