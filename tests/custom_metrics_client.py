"""Reads one custom metric through the official Python `kubernetes` client's
CustomObjectsApi, as a user's tooling would, and prints the answer as JSON.

usage: custom_metrics_client.py BASE_URL CA_FILE NAMESPACE PLURAL NAME
(e.g. PLURAL=deployments.apps NAME=llama-decode/wva_desired_replicas)
"""
import json
import sys

from kubernetes import client


def main() -> int:
    base, ca, namespace, plural, name = sys.argv[1:6]
    conf = client.Configuration()
    conf.host = base
    conf.ssl_ca_cert = ca
    api = client.CustomObjectsApi(client.ApiClient(conf))
    try:
        answer = api.get_namespaced_custom_object(
            "custom.metrics.k8s.io", "v1beta2", namespace, plural, name
        )
        print(json.dumps({"ok": answer}))
    except client.exceptions.ApiException as e:
        print(json.dumps({"status": e.status, "body": json.loads(e.body or "{}")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
