# No privileged containers.
package bowline.policies.privileged_container

import data.bowline.lib

deny contains {"field": sprintf("%s.securityContext.privileged", [c.path]), "msg": msg} if {
	some c in lib.containers
	c.container.securityContext.privileged == true
	what := {true: "init container", false: "container"}[c.init]
	msg := sprintf("%s %q is privileged: it has every capability of the node's root user", [what, c.container.name])
}
