# One environment of tagloop on Google Cloud. Names that the services read
# from their configuration (contracts section 2) are fixed here and handed to
# the chart, so the cloud resources and the services always agree.
locals {
  name = "tagloop-${var.environment}"

  # The services' defaults (tagloop.settings.CommonSettings); a test keeps them equal.
  feedback_topic        = "tag-feedback"
  feedback_subscription = "learner"
  model_topic           = "model-updates"
  # Every inference process's own subscription starts with this
  # (tagloop.channels.provisioning.INFERENCE_SUBSCRIPTION_PREFIX; a test keeps them equal).
  inference_subscription_prefix = "inference-"
  # Bucket names are global: prefix the services' default with the project.
  bucket_name = "${var.project_id}-tagloop-models"

  # Kubernetes service accounts that Workload Identity maps to Google ones.
  kubernetes_service_accounts = {
    learning  = "tagloop-learning"
    inference = "tagloop-inference"
  }
}

module "project_services" {
  source     = "./modules/project_services"
  project_id = var.project_id
}

module "network" {
  source     = "./modules/network"
  project_id = var.project_id
  name       = local.name
  region     = var.region

  depends_on = [module.project_services]
}

module "gke" {
  source                  = "./modules/gke"
  project_id              = var.project_id
  name                    = local.name
  location                = var.cluster_location
  release_channel         = var.release_channel
  deletion_protection     = var.deletion_protection
  network                 = module.network.network
  subnetwork              = module.network.subnetwork
  pods_range_name         = module.network.pods_range_name
  services_range_name     = module.network.services_range_name
  master_authorized_cidrs = var.master_authorized_cidrs
  system_machine_type     = var.system_machine_type
  node_machine_type       = var.node_machine_type
  node_min_count          = var.node_min_count
  node_max_count          = var.node_max_count
}

module "pubsub" {
  source                     = "./modules/pubsub"
  project_id                 = var.project_id
  feedback_topic             = local.feedback_topic
  feedback_subscription      = local.feedback_subscription
  model_topic                = local.model_topic
  feedback_retention_seconds = var.feedback_retention_seconds
  max_delivery_attempts      = var.max_delivery_attempts

  depends_on = [module.project_services]
}

module "bucket" {
  source                 = "./modules/bucket"
  project_id             = var.project_id
  name                   = local.bucket_name
  location               = var.region
  model_versions_to_keep = var.model_versions_to_keep
  force_destroy          = !var.deletion_protection

  depends_on = [module.project_services]
}

module "identity" {
  source                        = "./modules/identity"
  project_id                    = var.project_id
  name                          = local.name
  namespace                     = var.namespace
  kubernetes_service_accounts   = local.kubernetes_service_accounts
  bucket_name                   = module.bucket.name
  feedback_topic_id             = module.pubsub.feedback_topic_id
  feedback_subscription_id      = module.pubsub.feedback_subscription_id
  model_topic_id                = module.pubsub.model_topic_id
  inference_subscription_prefix = local.inference_subscription_prefix

  # The Workload Identity pool exists once the cluster does.
  depends_on = [module.gke]
}

module "alerting" {
  source      = "./modules/alerting"
  project_id  = var.project_id
  name        = local.name
  alert_email = var.alert_email
  rules_file  = "${path.root}/../observability/alerts.yml"

  depends_on = [module.project_services]
}

module "edge" {
  source              = "./modules/edge"
  project_id          = var.project_id
  name                = local.name
  feedback_per_minute = var.edge_feedback_per_minute
  requests_per_minute = var.edge_requests_per_minute

  depends_on = [module.project_services]
}

module "backup" {
  source        = "./modules/backup"
  project_id    = var.project_id
  name          = local.name
  location      = var.region
  cluster_id    = module.gke.id
  namespace     = var.namespace
  cron_schedule = var.learner_backup_cron
  retain_days   = var.learner_backup_retain_days
}

module "app" {
  source                      = "./modules/app"
  project_id                  = var.project_id
  name                        = local.name
  environment                 = var.environment
  namespace                   = var.namespace
  chart_path                  = "${path.root}/../helm/tagloop"
  app_version                 = var.app_version
  image_digests               = var.image_digests
  image_registry              = var.image_registry
  domain                      = var.domain
  feedback_topic              = local.feedback_topic
  feedback_subscription       = local.feedback_subscription
  model_topic                 = local.model_topic
  bucket_name                 = module.bucket.name
  kubernetes_service_accounts = local.kubernetes_service_accounts
  google_service_accounts     = module.identity.service_account_emails
  hmac_keys                   = module.identity.hmac_keys
  security_policy             = module.edge.security_policy
  feedback_backup_interval    = var.feedback_backup_interval_seconds

  # The release needs the node pools, not just the control plane.
  depends_on = [module.gke]
}
