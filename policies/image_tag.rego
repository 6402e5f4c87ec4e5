# Images must name a version: no `:latest`, no missing tag (which means latest).
package bowline.policies.image_tag

import data.bowline.lib

# The part of the reference after the registry and repository path.
last_segment(image) := parts[count(parts) - 1] if parts := split(image, "/")

deny contains {"field": sprintf("%s.image", [c.path]), "msg": msg} if {
	some c in lib.containers
	image := c.container.image
	is_string(image)
	not contains(image, "@")
	not contains(last_segment(image), ":")
	msg := sprintf("image %q has no tag, so it means \"latest\"; pin a version tag or a digest", [image])
}

deny contains {"field": sprintf("%s.image", [c.path]), "msg": msg} if {
	some c in lib.containers
	image := c.container.image
	is_string(image)
	not contains(image, "@")
	endswith(last_segment(image), ":latest")
	msg := sprintf("image %q uses the tag \"latest\"; pin a version tag or a digest", [image])
}
