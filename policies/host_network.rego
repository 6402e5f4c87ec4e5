# No pods on the node's network.
package bowline.policies.host_network

import data.bowline.lib

deny contains {"field": sprintf("%s.hostNetwork", [lib.pod_spec.path]), "msg": "uses the node's network (hostNetwork: true)"} if {
	lib.pod_spec.spec.hostNetwork == true
}
