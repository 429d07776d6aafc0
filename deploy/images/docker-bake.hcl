# On a machine with Docker and buildx (the GPU variants and arm64 cannot be built here):
#   docker buildx bake -f deploy/images/docker-bake.hcl            # every image, amd64 + arm64 (jetson arm64 only)
#   docker buildx bake -f deploy/images/docker-bake.hcl inference-cuda --set '*.output=type=docker'
# Here, scripts/build-images builds the CPU images with podman from an mmdebstrap base instead. docs/deploy.md, Images.
variable "REGISTRY" { default = "localhost/lineguard" }
variable "VERSION" { default = "0.1.0" }
variable "BASE_IMAGE" { default = "docker.io/library/debian:12.15-slim" }

group "default" {
  targets = ["services", "tools", "inference-cuda", "inference-jetson"]
}

target "_common" {
  context    = "."
  dockerfile = "deploy/images/Containerfile"
  target     = "service"
  platforms  = ["linux/amd64", "linux/arm64"]
  args       = { BASE_IMAGE = BASE_IMAGE }
  # pip's index and CA, as scripts/build-images passes them (optional: without them pip uses PyPI).
  secret = ["id=pip-conf,env=PIP_CONF_FILE", "id=pip-cert,env=PIP_CERT"]
}

# Each service with only its own extra, and tracing (tracing.endpoint can be turned on).
target "services" {
  inherits = ["_common"]
  name     = service
  matrix   = { service = ["capture", "inference", "ocr", "decision", "gateway", "results"] }
  args     = { BASE_IMAGE = BASE_IMAGE, SERVICE = service, EXTRAS = "${service},tracing" }
  tags     = ["${REGISTRY}/${service}:${VERSION}"]
}

target "tools" {
  inherits = ["_common"]
  args     = { BASE_IMAGE = BASE_IMAGE, SERVICE = "tools", EXTRAS = "eval" }
  tags     = ["${REGISTRY}/tools:${VERSION}"]
}

target "inference-cuda" {
  context    = "."
  dockerfile = "deploy/images/Containerfile.cuda"
  target     = "service"
  platforms  = ["linux/amd64"]
  tags       = ["${REGISTRY}/inference-cuda:${VERSION}"]
}

target "inference-jetson" {
  context    = "."
  dockerfile = "deploy/images/Containerfile.jetson"
  target     = "service"
  platforms  = ["linux/arm64"]
  tags       = ["${REGISTRY}/inference-jetson:${VERSION}"]
}
