output "cluster_name" {
  description = "GKE cluster (gcloud container clusters get-credentials NAME --location LOCATION)."
  value       = module.gke.name
}

output "cluster_location" {
  description = "GKE cluster location."
  value       = var.cluster_location
}

output "workload_node_pool" {
  description = "The node pool the off-hours workflow scales."
  value       = module.gke.workload_node_pool
}

output "ingress_ip" {
  description = "Public address of the web UI (point the domain's A record here)."
  value       = module.app.ingress_ip
}

output "model_bucket" {
  description = "Model registry bucket (TAGLOOP_S3_BUCKET)."
  value       = module.bucket.name
}

output "service_accounts" {
  description = "Google service accounts of the services (Workload Identity)."
  value       = module.identity.service_account_emails
}
