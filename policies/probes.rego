# Deployments' containers have liveness and readiness probes.
package bowline.policies.probes

import data.bowline.lib

warn contains {"field": sprintf("%s.%s", [c.path, probe]), "msg": msg} if {
	input.object.kind == "Deployment"
	some c in lib.containers
	not c.init
	some probe in ["livenessProbe", "readinessProbe"]
	not c.container[probe]
	msg := sprintf("container %q has no %s", [c.container.name, probe])
}
