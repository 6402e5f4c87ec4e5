# In production, every stage that puts a new version in front of all production traffic
# depends on a canaryAnalysis or manualJudgment stage.
package bowline.policies.production_gate

import data.bowline.lib

gates := {"canaryAnalysis", "manualJudgment"}

# Stages releasing to all traffic of this environment: rolling deploys, blue/green deploys that
# switch on their own, and promotions.
release(stage) if {
	stage.type == "deploy"
	stage.strategy == "rolling"
}

release(stage) if {
	stage.type == "deploy"
	stage.strategy == "blueGreen"
	stage.blueGreen.autoPromote == true
}

release(stage) if stage.type == "promote"

# Stage name → names of the stages it depends on (duplicated names, an error reported by
# validation, merge).
# The pipeline's stages; none when the app has no pipeline.
default stages := []

stages := input.pipeline if is_array(input.pipeline)

dependencies := {name: deps |
	some name in {s.name | some s in stages}
	deps := {d | some s in stages; s.name == name; some d in object.get(s, "dependsOn", [])}
}

gated(stage) if {
	some name in graph.reachable(dependencies, object.get(stage, "dependsOn", []))
	some other in stages
	other.name == name
	other.type in gates
}

deny contains {"msg": msg} if {
	lib.production
	input.object.kind in lib.workload_kinds
	input.pipeline == null
	msg := sprintf("app %q deploys to production without a pipeline; use a pipeline with a canaryAnalysis or manualJudgment stage before the production release", [input.app.name])
}

deny contains {"msg": msg} if {
	lib.production
	input.object.kind in lib.workload_kinds
	some stage in stages
	stage.environment == input.environment.name
	release(stage)
	not gated(stage)
	msg := sprintf("stage %q of pipeline %q releases to production with no canaryAnalysis or manualJudgment stage before it", [stage.name, input.app.pipeline])
}
