# Every container, init containers included, sets CPU and memory requests and limits.
package bowline.policies.resources

import data.bowline.lib

settings := ["requests.cpu", "requests.memory", "limits.cpu", "limits.memory"]

set(container, setting) if {
	[section, resource] := split(setting, ".")
	container.resources[section][resource] != null
}

deny contains {"field": sprintf("%s.resources", [c.path]), "msg": msg} if {
	some c in lib.containers
	missing := [s | some s in settings; not set(c.container, s)]
	count(missing) > 0
	what := {true: "init container", false: "container"}[c.init]
	msg := sprintf("%s %q sets no %s", [what, c.container.name, concat(", ", missing)])
}
