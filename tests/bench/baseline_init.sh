#!/bin/sh
# baseline_init.sh - what `pylon-agent init` does on Kubernetes, as the
# shell script an operator would write instead: `kubectl get --raw` along
# Pod -> ReplicaSet -> Deployment, the HPA list, jq for the JSON, then the
# bus proof with redis-cli (SUBSCRIBE on one connection, PUBLISH one
# envelope on another, wait for it), then the env file.  The benchmark's
# baseline (tests/bench/run.sh); it does less checking than the agent.
#
# usage: baseline_init.sh KUBECONFIG NAMESPACE POD REDIS_URL ENV_FILE
set -eu
KC=$1 NS=$2 POD=$3 URL=$4 OUT=$5

k() { kubectl --kubeconfig "$KC" get --raw "$1"; }
owner='.metadata.ownerReferences[] | select(.controller) | .name'

rs=$(k "/api/v1/namespaces/$NS/pods/$POD" | jq -r "$owner")
dep=$(k "/apis/apps/v1/namespaces/$NS/replicasets/$rs" | jq -r "$owner")
replicas=$(k "/apis/apps/v1/namespaces/$NS/deployments/$dep" |
    jq -r '.spec.replicas')
hpamax=$(k "/apis/autoscaling/v2/namespaces/$NS/horizontalpodautoscalers" |
    jq -r --arg d "$dep" '[.items[] | select(.spec.scaleTargetRef.kind ==
    "Deployment" and .spec.scaleTargetRef.name == $d) |
    .spec.maxReplicas] | max // 0')
peers=$replicas
[ "$hpamax" -gt "$peers" ] && peers=$hpamax

chan="pylon:cluster:bus"
nonce=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
envl="{\"instance_id\":\"sh-$nonce\",\"kind\":\"agent_probe\",\"payload\":{\"nonce\":\"$nonce\"}}"
dir=$(mktemp -d)
mkfifo "$dir/sub"
redis-cli -u "$URL" --no-auth-warning SUBSCRIBE "$chan" >"$dir/sub" &
sub=$!
exec 3<"$dir/sub"
# "subscribe", channel, count: subscribed
read -r _ <&3
read -r _ <&3
read -r _ <&3
redis-cli -u "$URL" --no-auth-warning PUBLISH "$chan" "$envl" >/dev/null
got=""
while read -r line <&3; do
	if [ "$line" = "$envl" ]; then
		got=1
		break
	fi
done
kill "$sub" 2>/dev/null || true
exec 3<&-
rm -rf "$dir"
[ -n "$got" ] || { echo "bus not proven" >&2; exit 69; }

mode=noop
[ "$peers" -gt 1 ] && mode=redis
umask 077
{
	echo "# baseline mode=$mode peers=$peers"
	echo "export PYLON_CLUSTER_BUS='$URL'"
	echo "export PYLON_CLUSTER_NAMESPACE='pylon'"
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
