#!/usr/bin/env bash
# Builds the pinned development tools (Kubernetes control plane, etcd, kwok,
# helm, controller-gen) from the Go module proxy into a cache outside the repo.
#
# Release download sites are not reachable from the build machines, so every
# tool is compiled from source at a pinned version. Each tool lands in
#   $TOOLS_DIR/<name>-<version>/<name>
# and is rebuilt only when that file is missing, so a second run does nothing.
#
# Usage:
#   hack/tools.sh install [name...]   build the named tools (default: all but the real
#                                     cluster's; "install real-cluster" builds those)
#   hack/tools.sh bin <name>          print the absolute path of a tool (builds it if missing)
#   hack/tools.sh envtest-assets      print a directory with kube-apiserver, etcd and kubectl
#                                     (the value for KUBEBUILDER_ASSETS)
#   hack/tools.sh list                print name, version and state of every tool
#   hack/tools.sh crds <set>          print a directory with the CRDs of another project, from
#                                     its Go module at a pinned version: gateway-api-standard,
#                                     gateway-api-experimental (sigs.k8s.io/gateway-api) or
#                                     cloudnative-pg (github.com/cloudnative-pg/cloudnative-pg) or
#                                     prometheus-operator (github.com/prometheus-operator/prometheus-operator)
#
# Environment:
#   TANDEM_TOOLS_DIR   cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/tandem/tools)
set -euo pipefail

KUBE_VERSION=v1.37.2
KUBE_STAGING_VERSION=v0.37.2
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v4.3.1
CONTROLLER_GEN_VERSION=v0.23.0
# The real single-node cluster of `make test-e2e-real` (hack/real-cluster/).
COREDNS_VERSION=v1.15.0
BUILDKIT_VERSION=v0.34.2
CRANE_VERSION=v0.22.1
# CRDs of the engines the operator drives (tests install them; nothing is built).
GATEWAY_API_VERSION=v1.4.1
CNPG_VERSION=v1.27.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
# Prometheus and promtool (Prometheus 3.x is Go module v0.3xx): the alert
# rule tests and the scrape test of the runtime's monitoring.
PROMETHEUS_VERSION=v0.316.0
PROMETHEUS_RELEASE=3.16.0 # the release that module version is, stamped into --version

# Order matters for "install" without arguments: envtest needs kube-apiserver
# and etcd first, so they are built first.
ALL_TOOLS=(kube-apiserver etcd kubectl kube-controller-manager kube-scheduler controller-gen helm kwok kwokctl promtool prometheus)
# Built only on request ("install real-cluster" or by name): the node agents,
# cluster DNS and the image builders of the real cluster.
REAL_CLUSTER_TOOLS=(kubelet kube-proxy coredns buildkitd buildctl crane)

TOOLS_DIR=${TANDEM_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem/tools}

# The builds must use the Go installed on the machine; a toolchain line in a
# dependency must never trigger a toolchain download.
export GOTOOLCHAIN=local
export GOWORK=off
export CGO_ENABLED=0

log() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] ERROR: %s\n' "$*" >&2; exit 1; }

tool_version() {
	case "$1" in
	kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy) echo "$KUBE_VERSION" ;;
	etcd) echo "$ETCD_VERSION" ;;
	kwok | kwokctl) echo "$KWOK_VERSION" ;;
	helm) echo "$HELM_VERSION" ;;
	controller-gen) echo "$CONTROLLER_GEN_VERSION" ;;
	coredns) echo "$COREDNS_VERSION" ;;
	buildkitd | buildctl) echo "$BUILDKIT_VERSION" ;;
	crane) echo "$CRANE_VERSION" ;;
	promtool | prometheus) echo "$PROMETHEUS_VERSION" ;;
	*) die "unknown tool '$1' (known: ${ALL_TOOLS[*]} ${REAL_CLUSTER_TOOLS[*]})" ;;
	esac
}

tool_path() {
	local v
	v=$(tool_version "$1")
	echo "$TOOLS_DIR/$1-$v/$1"
}

# run_go <tool> <go args...>: runs a go command and, on failure, names the
# tool and the exact command so the log says what to retry.
run_go() {
	local tool=$1
	shift
	log "$tool: go $*"
	if ! go "$@"; then
		die "$tool: build failed: go $* (in $PWD)"
	fi
}

# ldflags that stamp the Kubernetes version; kubectl, helm and envtest parse it.
kube_ldflags() {
	local minor=${KUBE_VERSION#v1.}
	minor=${minor%%.*}
	local f=""
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		f+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
		f+=" -X $pkg.gitTreeState=clean"
	done
	echo "-s -w$f"
}

# write_kube_wrapper <dir>: a throwaway module that requires k8s.io/kubernetes
# and points every staging module (listed as "=> ./staging/..." in its go.mod)
# at the published version of that module.
write_kube_wrapper() {
	local dir=$1 kmod
	kmod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
	[ -f "$kmod" ] || die "kubernetes: go mod download k8s.io/kubernetes@$KUBE_VERSION gave no go.mod"
	{
		echo "module tandem.dev/tools/kubernetes"
		echo
		echo "go 1.26.0"
		echo
		grep '^godebug ' "$kmod" || true
		echo
		echo "require k8s.io/kubernetes $KUBE_VERSION"
		echo
		echo "replace ("
		awk '$2 == "=>" && $3 ~ /^\.\/staging\// { printf "\t%s => %s '"$KUBE_STAGING_VERSION"'\n", $1, $1 }' "$kmod"
		echo ")"
	} >"$dir/go.mod"
	grep -q 'k8s.io/client-go => k8s.io/client-go' "$dir/go.mod" ||
		die "kubernetes: could not read the staging module list from $kmod"
}

# write_buildkit_wrapper <dir>: BuildKit's go.mod has exclude directives,
# which `go install pkg@version` refuses; a module that requires it and
# repeats them builds the same dependency graph.
write_buildkit_wrapper() {
	local dir=$1 bmod
	bmod=$(go mod download -json "github.com/moby/buildkit@$BUILDKIT_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
	[ -f "$bmod" ] || die "buildkit: go mod download github.com/moby/buildkit@$BUILDKIT_VERSION gave no go.mod"
	{
		printf 'module tandem.dev/tools/buildkit\n\ngo 1.26.8\n\nrequire github.com/moby/buildkit %s\n\n' "$BUILDKIT_VERSION"
		awk '/^exclude \(/,/^\)/' "$bmod" | grep -v '^[[:space:]]*//'
	} >"$dir/go.mod"
}

write_etcd_wrapper() {
	local dir=$1
	cat >"$dir/go.mod" <<EOF
module tandem.dev/tools/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
}

write_prometheus_wrapper() {
	local dir=$1
	cat >"$dir/go.mod" <<EOF
module tandem.dev/tools/prometheus

go 1.26.0

require github.com/prometheus/prometheus $PROMETHEUS_VERSION
EOF
}

# build_tool <name>: builds into a temporary name next to the target, checks
# that the binary runs, then renames it into place so an interrupted build
# never leaves a half-written tool behind.
build_tool() {
	local name=$1 version target dir tmpbin work start
	version=$(tool_version "$name")
	target=$(tool_path "$name")
	dir=$(dirname "$target")
	mkdir -p "$dir"
	tmpbin="$dir/.$name.tmp.$$"
	work=$(mktemp -d "${TMPDIR:-/tmp}/tandem-tool-$name.XXXXXX")
	# build_tool always runs in the subshell of ensure_tool, so EXIT fires when
	# this build ends, also when it fails.
	# shellcheck disable=SC2064 # expand now: the trap must clean these paths
	trap "rm -rf '$work' '$tmpbin'" EXIT
	start=$(date +%s)
	log "$name $version: building (cold builds take minutes)"
	case "$name" in
	kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy)
		write_kube_wrapper "$work"
		(cd "$work" && GOFLAGS="-mod=mod -trimpath -buildvcs=false" run_go "$name" build -ldflags "$(kube_ldflags)" -o "$tmpbin" "k8s.io/kubernetes/cmd/$name")
		;;
	etcd)
		write_etcd_wrapper "$work"
		(cd "$work" && GOFLAGS="-mod=mod -trimpath -buildvcs=false" run_go "$name" build -ldflags "-s -w" -o "$tmpbin" go.etcd.io/etcd/server/v3)
		;;
	kwok | kwokctl)
		(cd "$work" && GOFLAGS="-trimpath -buildvcs=false" GOBIN="$work/bin" run_go "$name" install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/$name@$version")
		mv "$work/bin/$name" "$tmpbin"
		;;
	helm)
		(cd "$work" && GOFLAGS="-trimpath -buildvcs=false" GOBIN="$work/bin" run_go "$name" install \
			-ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$version" "helm.sh/helm/v4/cmd/helm@$version")
		mv "$work/bin/$name" "$tmpbin"
		;;
	controller-gen)
		(cd "$work" && GOFLAGS="-trimpath -buildvcs=false" GOBIN="$work/bin" run_go "$name" install "sigs.k8s.io/controller-tools/cmd/controller-gen@$version")
		mv "$work/bin/$name" "$tmpbin"
		;;
	coredns)
		(cd "$work" && GOFLAGS="-trimpath -buildvcs=false" GOBIN="$work/bin" run_go "$name" install -ldflags "-s -w" "github.com/coredns/coredns@$version")
		mv "$work/bin/$name" "$tmpbin"
		;;
	crane)
		(cd "$work" && GOFLAGS="-trimpath -buildvcs=false" GOBIN="$work/bin" run_go "$name" install -ldflags "-s -w" "github.com/google/go-containerregistry/cmd/crane@$version")
		mv "$work/bin/$name" "$tmpbin"
		;;
	promtool | prometheus)
		# Without the builtinassets tag the web UI is not embedded (its
		# assets are built by npm, outside the Go module): the API, the
		# rule engine and the scraper are all there.
		write_prometheus_wrapper "$work"
		(cd "$work" && GOFLAGS="-mod=mod -trimpath -buildvcs=false" run_go "$name" build \
			-ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_RELEASE -X github.com/prometheus/common/version.Branch=release" \
			-o "$tmpbin" "github.com/prometheus/prometheus/cmd/$name")
		;;
	buildkitd | buildctl)
		write_buildkit_wrapper "$work"
		(cd "$work" && GOFLAGS="-mod=mod -trimpath -buildvcs=false" run_go "$name" build -ldflags "-s -w -X github.com/moby/buildkit/version.Version=$version" -o "$tmpbin" "github.com/moby/buildkit/cmd/$name")
		;;
	esac
	verify_tool "$name" "$tmpbin"
	mv -f "$tmpbin" "$target"
	log "$name $version: done in $(($(date +%s) - start))s -> $target"
}

# verify_tool <name> <binary>: the binary must run and report a version.
verify_tool() {
	local name=$1 bin=$2 out
	case "$name" in
	kubectl) out=$("$bin" version --client 2>&1) ;;
	helm | crane) out=$("$bin" version 2>&1) ;;
	coredns) out=$("$bin" -version 2>&1) ;;
	*) out=$("$bin" --version 2>&1) ;;
	esac || die "$name: built binary does not run: $out"
	log "$name: $(printf '%s' "$out" | head -n 1)"
	case "$name" in
	kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy)
		printf '%s' "$out" | grep -q "$KUBE_VERSION" || die "$name: version stamp missing (got: $out)"
		;;
	esac
}

# ensure_tool <name>: build if missing. A lock per tool lets several shells
# ask for the same tool at once: the others wait and then reuse the result.
ensure_tool() {
	local name=$1 target lock
	target=$(tool_path "$name")
	if [ -x "$target" ]; then
		return 0
	fi
	mkdir -p "$TOOLS_DIR"
	lock="$TOOLS_DIR/.$name-$(tool_version "$name").lock"
	(
		if ! flock -n 9; then
			log "$name: another process is building it; waiting"
			flock 9
		fi
		if [ -x "$target" ]; then
			log "$name $(tool_version "$name"): built meanwhile by another process"
			exit 0
		fi
		build_tool "$name"
	) 9>"$lock"
}

cmd_install() {
	local tools=("$@") t
	if [ ${#tools[@]} -eq 0 ]; then
		tools=("${ALL_TOOLS[@]}")
	elif [ "${tools[*]}" = real-cluster ]; then
		tools=("${REAL_CLUSTER_TOOLS[@]}")
	fi
	for t in "${tools[@]}"; do
		tool_version "$t" >/dev/null
	done
	for t in "${tools[@]}"; do
		if [ -x "$(tool_path "$t")" ]; then
			log "$t $(tool_version "$t"): up to date"
		else
			ensure_tool "$t"
		fi
	done
}

cmd_bin() {
	[ $# -eq 1 ] || die "usage: $0 bin <name>"
	ensure_tool "$1" >&2
	tool_path "$1"
}

# envtest expects one directory holding kube-apiserver, etcd and kubectl.
cmd_envtest_assets() {
	local t dir="$TOOLS_DIR/envtest-$KUBE_VERSION-etcd-$ETCD_VERSION"
	for t in kube-apiserver etcd kubectl; do
		ensure_tool "$t" >&2
	done
	mkdir -p "$dir"
	for t in kube-apiserver etcd kubectl; do
		ln -sfn "$(tool_path "$t")" "$dir/$t"
	done
	echo "$dir"
}

# The CRD YAML ships in each project's Go module; `go mod download` puts the
# module in the module cache (read-only, shared with builds) and says where.
cmd_crds() {
	[ $# -eq 1 ] || die "usage: $0 crds gateway-api-standard|gateway-api-experimental|cloudnative-pg|prometheus-operator"
	local mod sub dir
	case "$1" in
	gateway-api-standard) mod=sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION sub=config/crd/standard ;;
	gateway-api-experimental) mod=sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION sub=config/crd/experimental ;;
	cloudnative-pg) mod=github.com/cloudnative-pg/cloudnative-pg@$CNPG_VERSION sub=config/crd/bases ;;
	prometheus-operator) mod=github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION sub=example/prometheus-operator-crd ;;
	*) die "unknown CRD set '$1' (known: gateway-api-standard gateway-api-experimental cloudnative-pg prometheus-operator)" ;;
	esac
	dir=$(cd "${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod go mod download -json "$mod" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	[ -n "$dir" ] && [ -d "$dir/$sub" ] || die "crds $1: go mod download $mod gave no $sub"
	echo "$dir/$sub"
}

cmd_list() {
	local t state
	for t in "${ALL_TOOLS[@]}" "${REAL_CLUSTER_TOOLS[@]}"; do
		state=missing
		[ -x "$(tool_path "$t")" ] && state=installed
		printf '%-24s %-8s %-9s %s\n' "$t" "$(tool_version "$t")" "$state" "$(tool_path "$t")"
	done
}

main() {
	command -v go >/dev/null || die "go is not on PATH"
	local cmd=${1:-}
	[ $# -gt 0 ] && shift
	case "$cmd" in
	install) cmd_install "$@" ;;
	bin) cmd_bin "$@" ;;
	envtest-assets) cmd_envtest_assets ;;
	list) cmd_list ;;
	crds) cmd_crds "$@" ;;
	*) die "usage: $0 install [name...] | bin <name> | envtest-assets | list | crds <set>" ;;
	esac
}

main "$@"
