#!/usr/bin/env bash
# `make demo`: a local control plane (kwokctl, binary runtime, fake nodes),
# the Helm chart, the operator running on this machine with the chart's
# ServiceAccount permissions, and the managed sample CollabCluster, Ready.
# `make demo-down` removes all of it.
#
# Usage: hack/e2e/demo.sh up|down
#
# Environment:
#   DEMO_DIR      state: kubeconfig, operator binary, pid file and log
#                 (default bin/demo in the repository)
#   DEMO_CLUSTER  kwokctl cluster name (default tandem-demo)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
demo_dir="${DEMO_DIR:-${root}/bin/demo}"
cluster="${DEMO_CLUSTER:-tandem-demo}"
export KWOK_WORKDIR="${demo_dir}/kwok"
kubeconfig="${demo_dir}/kubeconfig"
operator_kubeconfig="${demo_dir}/operator.kubeconfig"
pidfile="${demo_dir}/manager.pid"
logfile="${demo_dir}/manager.log"
release=tandem
release_ns=tandem-system
sample="${root}/config/samples/collab_v1alpha1_collabcluster.yaml"

log() { printf '[demo] %s\n' "$*" >&2; }
die() { printf '[demo] ERROR: %s\n' "$*" >&2; exit 1; }

operator_running() {
	[[ -f ${pidfile} ]] && kill -0 "$(cat "${pidfile}")" 2>/dev/null
}

up() {
	local kubectl helm
	kubectl="$("${root}/hack/tools.sh" bin kubectl)"
	helm="$("${root}/hack/tools.sh" bin helm)"
	mkdir -p "${demo_dir}"
	k() { "${kubectl}" --kubeconfig "${kubeconfig}" "$@"; }

	if [[ -f ${kubeconfig} ]] && k get --raw /readyz >/dev/null 2>&1; then
		log "cluster ${cluster} already running"
	else
		"${root}/hack/e2e/kwok-cluster.sh" create "${cluster}" "${kubeconfig}" 3
	fi

	log "installing the chart (release ${release} in ${release_ns})"
	"${helm}" --kubeconfig "${kubeconfig}" upgrade --install "${release}" "${root}/charts/tandem" \
		--namespace "${release_ns}" --create-namespace --wait --timeout 3m >&2

	# The operator pod cannot run on fake nodes, so the operator runs here,
	# acting as the chart's ServiceAccount: it gets exactly the chart's RBAC.
	local image
	image="$(k -n "${release_ns}" get deployment "${release}" \
		-o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="RUNTIME_IMAGE")].value}')"
	[[ -n ${image} ]] || die "the chart's Deployment has no RUNTIME_IMAGE"
	local server ca crt key
	server="$(k config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
	ca="$(k config view --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')"
	crt="$(k config view --minify -o jsonpath='{.users[0].user.client-certificate}')"
	key="$(k config view --minify -o jsonpath='{.users[0].user.client-key}')"
	[[ -n ${server} && -n ${ca} && -n ${crt} && -n ${key} ]] || die "cannot read the admin credentials from ${kubeconfig}"
	cat >"${operator_kubeconfig}" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: demo
  cluster:
    server: ${server}
    certificate-authority: ${ca}
users:
- name: operator
  user:
    client-certificate: ${crt}
    client-key: ${key}
    as: system:serviceaccount:${release_ns}:${release}
    as-groups:
    - system:serviceaccounts
    - system:serviceaccounts:${release_ns}
    - system:authenticated
contexts:
- name: operator
  context:
    cluster: demo
    user: operator
    namespace: ${release_ns}
current-context: operator
KUBECONFIG

	if operator_running; then
		log "operator already running (pid $(cat "${pidfile}"))"
	else
		log "building the operator"
		(cd "${root}" && CGO_ENABLED=0 nice go build -o "${demo_dir}/manager" ./cmd/manager)
		log "starting the operator (log: ${logfile})"
		KUBECONFIG="${operator_kubeconfig}" RUNTIME_IMAGE="${image}" WATCH_NAMESPACE="" POD_NAMESPACE="${release_ns}" \
			nohup "${demo_dir}/manager" \
			--leader-elect --leader-election-namespace="${release_ns}" \
			--metrics-bind-address=127.0.0.1:0 --health-probe-bind-address=127.0.0.1:0 \
			>"${logfile}" 2>&1 &
		echo $! >"${pidfile}"
		sleep 2
		operator_running || die "the operator exited at start; see ${logfile}:
$(tail -n 30 "${logfile}")"
	fi

	local name
	name="$(awk '/^metadata:/{m=1} m && /^  name:/{print $2; exit}' "${sample}")"
	log "applying ${sample#"${root}"/} (collabcluster/${name})"
	k apply -n default -f "${sample}" >&2
	if ! k -n default wait --for=condition=Ready "collabcluster/${name}" --timeout=3m >&2; then
		k -n default get collabcluster "${name}" -o yaml >&2 || true
		die "collabcluster/${name} did not become Ready; operator log: ${logfile}"
	fi

	cat <<MSG

Tandem demo is up: a kwok control plane (fake nodes: pods are scheduled and
reported Running, but no container runs), the chart in ${release_ns}, and the
operator running locally (pid $(cat "${pidfile}"), log ${logfile}).

Try (kubectl is also at $("${root}/hack/tools.sh" bin kubectl)):
  export KUBECONFIG=${kubeconfig}
  kubectl get collab
  kubectl scale collabcluster/${name} --replicas=5
  kubectl get collab,deploy,sts,pdb,pods -o wide
  kubectl describe collabcluster/${name}

Remove everything with: make demo-down
MSG
}

down() {
	if operator_running; then
		local pid
		pid="$(cat "${pidfile}")"
		log "stopping the operator (pid ${pid})"
		kill "${pid}"
		for _ in $(seq 1 20); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.5; done
		kill -0 "${pid}" 2>/dev/null && kill -9 "${pid}"
	fi
	rm -f "${pidfile}"
	if [[ -d ${KWOK_WORKDIR}/clusters/${cluster} ]]; then
		"${root}/hack/e2e/kwok-cluster.sh" delete "${cluster}"
	fi
	rm -rf "${demo_dir}"
	log "demo removed"
}

case "${1:-}" in
up) up ;;
down) down ;;
*) die "usage: $0 up|down" ;;
esac
