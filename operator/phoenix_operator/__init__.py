"""Phoenix Operator: builds and continuously tunes a Triton + Milvus LLM chatbot stack on Kubernetes."""

__version__ = "0.1.0"

#: API group of every Phoenix custom resource; one place so CRDs, RBAC and clients agree.
API_GROUP = "serving.phoenixoperator.io"
API_VERSION = "v1alpha1"
KIND = "PhoenixDeployment"
PLURAL = "phoenixdeployments"
SINGULAR = "phoenixdeployment"
SHORT_NAMES = ("phx",)
#: Field manager for every server-side apply the operator makes.
FIELD_MANAGER = "phoenix-operator"
