provider "google" {
  project = var.project_id
  region  = var.region
}

data "google_client_config" "current" {}

# The cluster is created in the same apply; both providers connect with the
# caller's own Google credentials (no static kubeconfig, no stored token)
# through the DNS-based endpoint, which IAM authorizes (the IP endpoint
# admits only var.master_authorized_cidrs) and which serves a publicly
# trusted certificate (so no cluster CA here).
provider "kubernetes" {
  host  = "https://${module.gke.dns_endpoint}"
  token = data.google_client_config.current.access_token
}

provider "helm" {
  kubernetes {
    host  = "https://${module.gke.dns_endpoint}"
    token = data.google_client_config.current.access_token
  }
}
