# No hostPath volumes.
package bowline.policies.host_path

import data.bowline.lib

deny contains {"field": sprintf("%s.volumes[%d].hostPath", [lib.pod_spec.path, i]), "msg": msg} if {
	some i, volume in lib.pod_spec.spec.volumes
	volume.hostPath
	msg := sprintf("volume %q mounts the node's path %q (hostPath)", [volume.name, object.get(volume.hostPath, "path", "")])
}
