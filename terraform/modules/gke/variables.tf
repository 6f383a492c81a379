variable "project_id" {
  description = "Project of the cluster."
  type        = string
}

variable "name" {
  description = "Cluster name."
  type        = string
}

variable "location" {
  description = "Zone or region of the cluster."
  type        = string
}

variable "release_channel" {
  description = "GKE release channel."
  type        = string
}

variable "deletion_protection" {
  description = "Refuse terraform destroy of the cluster."
  type        = bool
}

variable "network" {
  description = "VPC self link."
  type        = string
}

variable "subnetwork" {
  description = "Subnet self link."
  type        = string
}

variable "pods_range_name" {
  description = "Secondary range name for pods."
  type        = string
}

variable "services_range_name" {
  description = "Secondary range name for services."
  type        = string
}

variable "master_authorized_cidrs" {
  description = "CIDRs allowed to reach the control plane's IP endpoint; empty: none (DNS endpoint only)."
  type        = list(string)
}

variable "system_machine_type" {
  description = "Machine type of the always-on system pool."
  type        = string
}

variable "node_machine_type" {
  description = "Machine type of the workload pool."
  type        = string
}

variable "node_min_count" {
  description = "Workload pool autoscaler minimum per zone."
  type        = number
}

variable "node_max_count" {
  description = "Workload pool autoscaler maximum per zone."
  type        = number
}
