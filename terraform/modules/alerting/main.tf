# Alerts that reach someone: every rule of observability/alerts.yml (the file
# Compose's Prometheus and the chart's Rules load) becomes a Cloud Monitoring
# alert policy with a PromQL condition over the Managed Prometheus data, and
# every policy notifies the environment's notification channel. The rules stay
# in one file; only the routing lives here.
variable "project_id" {
  description = "Project of the alert policies."
  type        = string
}

variable "name" {
  description = "Name prefix (tagloop-<environment>)."
  type        = string
}

variable "alert_email" {
  description = "Address the alerts are sent to (an on-call list, not a person)."
  type        = string
}

variable "rules_file" {
  description = "Path of observability/alerts.yml."
  type        = string
}

resource "google_monitoring_notification_channel" "email" {
  project      = var.project_id
  display_name = "${var.name} alerts"
  type         = "email"
  labels = {
    email_address = var.alert_email
  }
}

locals {
  groups = yamldecode(file(var.rules_file)).groups
  rules = merge([
    for group in local.groups : {
      for rule in group.rules : rule.alert => merge(rule, { group = group.name })
    }
  ]...)
}

resource "google_monitoring_alert_policy" "rule" {
  for_each = local.rules

  project      = var.project_id
  display_name = "${var.name} ${each.key}"
  combiner     = "OR"
  severity     = upper(each.value.labels.severity) == "CRITICAL" ? "CRITICAL" : "WARNING"

  conditions {
    display_name = each.key
    condition_prometheus_query_language {
      query = each.value.expr
      # The rules' "for" is in minutes ("5m"); Cloud Monitoring wants seconds.
      duration            = "${tonumber(trimsuffix(each.value["for"], "m")) * 60}s"
      evaluation_interval = "60s"
      alert_rule          = each.key
      rule_group          = each.value.group
      labels              = each.value.labels
    }
  }

  notification_channels = [google_monitoring_notification_channel.email.id]

  documentation {
    # Prometheus templates ({{ $value }}) mean nothing to Cloud Monitoring.
    content   = "${each.value.annotations.summary}\n\n${replace(each.value.annotations.description, "/\\{\\{[^}]*\\}\\}/", "(see the chart)")}"
    mime_type = "text/markdown"
  }

  alert_strategy {
    auto_close = "1800s"
  }
}

output "notification_channel" {
  description = "The channel every alert policy notifies."
  value       = google_monitoring_notification_channel.email.id
}
