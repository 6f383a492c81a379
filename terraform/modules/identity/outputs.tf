output "service_account_emails" {
  description = "Google service account email per service."
  value       = { for key, sa in google_service_account.service : key => sa.email }
}

output "hmac_keys" {
  description = "HMAC access id and secret per service, for the Kubernetes Secrets."
  sensitive   = true
  value = {
    for key, hmac in google_storage_hmac_key.service : key => {
      access_id = hmac.access_id
      secret    = hmac.secret
    }
  }
}
