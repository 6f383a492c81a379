# The edge: a Cloud Armor security policy on the ingress backend (attached by
# the chart's BackendConfig, whose name this module hands to the release). Its
# rate-based rules count per client address at Google's front end, before any
# replica: one limit per client for the whole deployment, however many
# replicas and workers serve it. The in-process limiter stays as defence in
# depth (and for the local stack, which has no Cloud Armor).
variable "project_id" {
  description = "Project of the policy."
  type        = string
}

variable "name" {
  description = "Name prefix (tagloop-<environment>)."
  type        = string
}

variable "feedback_per_minute" {
  description = "POST /api/feedback requests per minute and client address before 429."
  type        = number
}

variable "requests_per_minute" {
  description = "Requests of any kind per minute and client address before 429."
  type        = number
}

resource "google_compute_security_policy" "edge" {
  project     = var.project_id
  name        = "${var.name}-edge"
  description = "tagloop edge: per-client rate limits in front of the UI."
  type        = "CLOUD_ARMOR"

  rule {
    action      = "throttle"
    priority    = 1000
    description = "Feedback: one budget per client address for the whole deployment."
    match {
      expr {
        expression = "request.method == 'POST' && request.path.startsWith('/api/feedback')"
      }
    }
    rate_limit_options {
      conform_action = "allow"
      exceed_action  = "deny(429)"
      enforce_on_key = "IP"
      rate_limit_threshold {
        count        = var.feedback_per_minute
        interval_sec = 60
      }
    }
  }

  rule {
    action      = "throttle"
    priority    = 2000
    description = "Everything else: a generous per-client ceiling against floods."
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
    rate_limit_options {
      conform_action = "allow"
      exceed_action  = "deny(429)"
      enforce_on_key = "IP"
      rate_limit_threshold {
        count        = var.requests_per_minute
        interval_sec = 60
      }
    }
  }

  rule {
    action      = "allow"
    priority    = 2147483647
    description = "Default: allow."
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
  }
}

output "security_policy" {
  description = "Name of the Cloud Armor policy (the chart's BackendConfig refers to it)."
  value       = google_compute_security_policy.edge.name
}
