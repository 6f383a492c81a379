output "name" {
  description = "Cluster name."
  value       = google_container_cluster.this.name
}

output "workload_node_pool" {
  description = "Name of the autoscaled application pool."
  value       = google_container_node_pool.workload.name
}

output "id" {
  description = "Cluster id (projects/P/locations/L/clusters/N), for Backup for GKE."
  value       = google_container_cluster.this.id
}

output "dns_endpoint" {
  description = "DNS-based control plane endpoint (IAM-authorized; what Terraform and CI use)."
  value       = google_container_cluster.this.control_plane_endpoints_config[0].dns_endpoint_config[0].endpoint
}
