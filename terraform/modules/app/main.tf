# The application: its namespace, the S3 credential Secrets (written here
# from the HMAC keys, so no secret ever sits in a variables or values file),
# the ingress address, and the Helm release of helm/tagloop with the
# environment's values file plus what only Terraform knows.

resource "kubernetes_namespace_v1" "app" {
  metadata {
    name = var.namespace
    labels = {
      "app.kubernetes.io/part-of" = "tagloop"
    }
  }
}

resource "kubernetes_secret_v1" "s3" {
  for_each = var.kubernetes_service_accounts

  metadata {
    name      = "tagloop-${each.key}-s3"
    namespace = kubernetes_namespace_v1.app.metadata[0].name
  }

  data = {
    AWS_ACCESS_KEY_ID     = var.hmac_keys[each.key].access_id
    AWS_SECRET_ACCESS_KEY = var.hmac_keys[each.key].secret
  }
}

resource "google_compute_global_address" "ingress" {
  project = var.project_id
  name    = "${var.name}-ingress"
}

locals {
  component_values = {
    for key, ksa in var.kubernetes_service_accounts : key => {
      s3Credentials = {
        existingSecret     = kubernetes_secret_v1.s3[key].metadata[0].name
        accessKeyIdKey     = "AWS_ACCESS_KEY_ID"
        secretAccessKeyKey = "AWS_SECRET_ACCESS_KEY"
      }
      serviceAccount = {
        create = true
        name   = ksa
        annotations = {
          "iam.gke.io/gcp-service-account" = var.google_service_accounts[key]
        }
      }
    }
  }

  values = {
    image = {
      registry = var.image_registry
      tag      = var.app_version
      digests  = var.image_digests
    }
    config = {
      gcpProject           = var.project_id
      feedbackTopic        = var.feedback_topic
      feedbackSubscription = var.feedback_subscription
      modelTopic           = var.model_topic
      s3Bucket             = var.bucket_name
    }
    learning = merge(local.component_values["learning"], {
      backupIntervalSeconds = var.feedback_backup_interval
    })
    inference = local.component_values["inference"]
    ingress = {
      enabled      = true
      host         = var.domain
      staticIpName = google_compute_global_address.ingress.name
      # GKE BackendConfig: the Cloud Armor policy with the per-client rate limits.
      securityPolicy = var.security_policy
      managedCertificate = {
        enabled = var.domain != ""
      }
    }
  }
}

resource "helm_release" "tagloop" {
  name      = "tagloop"
  namespace = kubernetes_namespace_v1.app.metadata[0].name
  chart     = var.chart_path

  values = [
    file("${var.chart_path}/values-${var.environment}.yaml"),
    yamlencode(local.values),
  ]

  # Roll back by itself if the new version never becomes ready.
  atomic          = true
  wait            = true
  timeout         = 900
  cleanup_on_fail = true
  max_history     = 10
}

output "ingress_ip" {
  description = "Reserved global address of the ingress."
  value       = google_compute_global_address.ingress.address
}
