provider "google" {
  project = var.project_id
  region  = var.region
}

data "google_client_config" "current" {}

# The cluster is created in the same apply; both providers connect with the
# caller's own Google credentials (no static kubeconfig, no stored token).
provider "kubernetes" {
  host                   = "https://${module.gke.endpoint}"
  token                  = data.google_client_config.current.access_token
  cluster_ca_certificate = base64decode(module.gke.ca_certificate)
}

provider "helm" {
  kubernetes {
    host                   = "https://${module.gke.endpoint}"
    token                  = data.google_client_config.current.access_token
    cluster_ca_certificate = base64decode(module.gke.ca_certificate)
  }
}
