# At least 2 replicas in production. A workload scaled by a HorizontalPodAutoscaler is
# judged by the autoscaler's minReplicas instead of its own replicas.
package bowline.policies.production_replicas

import data.bowline.lib

deny contains {"field": "spec.replicas", "msg": msg} if {
	lib.production
	input.object.kind in {"Deployment", "StatefulSet"}
	input.autoscaler == null
	replicas := object.get(input.object.spec, "replicas", 1)
	replicas < 2
	msg := sprintf("runs %d %s in production; run at least 2", [replicas, noun(replicas)])
}

deny contains {"field": "spec.minReplicas", "msg": msg} if {
	lib.production
	input.object.kind == "HorizontalPodAutoscaler"
	replicas := object.get(input.object.spec, "minReplicas", 1)
	replicas < 2
	msg := sprintf("scales down to %d %s in production; set minReplicas to at least 2", [replicas, noun(replicas)])
}

noun(1) := "replica"

noun(n) := "replicas" if n != 1
