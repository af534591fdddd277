#!/usr/bin/env bash
# pki.sh DIR NODE_IP NODE: a throwaway CA, the serving and client certificates
# of every component, the service-account key pair, and a kubeconfig per
# component (NAME.kubeconfig). openssl only.
set -euo pipefail
dir=${1:?usage: pki.sh DIR NODE_IP NODE}
node_ip=${2:?}
node=${3:?}
mkdir -p "$dir"
cd "$dir"
openssl genrsa -out ca.key 2048 2>/dev/null
openssl req -x509 -new -nodes -key ca.key -subj "/CN=tandem-real-ca" -days 3650 -out ca.crt 2>/dev/null

# cert NAME CN ORG [SANS]: with SANS a serving (and client) certificate,
# without a client certificate.
cert() {
	local name=$1 cn=$2 org=$3 sans=${4:-} subj
	subj="/CN=$cn"
	[ -n "$org" ] && subj="/O=$org/CN=$cn"
	openssl genrsa -out "$name.key" 2048 2>/dev/null
	openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
	{
		echo "basicConstraints=CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		if [ -n "$sans" ]; then
			echo "extendedKeyUsage=serverAuth,clientAuth"
			echo "subjectAltName=$sans"
		else
			echo "extendedKeyUsage=clientAuth"
		fi
	} >"$name.ext"
	openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
		-extfile "$name.ext" -out "$name.crt" 2>/dev/null
	rm -f "$name.csr" "$name.ext"
}
cert apiserver kube-apiserver "" "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:10.96.0.1,IP:$node_ip"
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
cert admin tandem-real-admin system:masters
cert controller-manager system:kube-controller-manager ""
cert scheduler system:kube-scheduler ""
cert kube-proxy system:kube-proxy ""
cert kubelet "system:node:$node" system:nodes
cert kubelet-serving "$node" "" "DNS:$node,DNS:localhost,IP:127.0.0.1,IP:$node_ip"
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null

for user in admin controller-manager scheduler kube-proxy kubelet; do
	cat >"$user.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: tandem-real
  cluster: {server: "https://127.0.0.1:6443", certificate-authority: "$dir/ca.crt"}
users:
- name: $user
  user: {client-certificate: "$dir/$user.crt", client-key: "$dir/$user.key"}
contexts:
- name: tandem-real
  context: {cluster: tandem-real, user: $user}
current-context: tandem-real
YAML
done
