"""Seed a LocalStack with a demo setup for byok-broker.

Creates, in the tenant's simulated AWS account (a 12-digit access key id acts as that account):
  * a symmetric CMK with an alias, the key a tenant would bring,
  * an IAM role whose trust policy names the broker's account and the organization's ExternalId,
    with a policy allowing the KMS calls the broker makes on that key.
The external id is the broker's (it generates one per organization): pass the value of
`GET /admin/v1/byok-external-ids/org_acme` as EXTERNAL_ID. Prints the registration body as JSON.
Usage: localstack/.venv/bin/python localstack/seed.py [ENDPOINT] [EXTERNAL_ID]
(default http://127.0.0.1:4566; LocalStack does not enforce the trust policy, so without an
EXTERNAL_ID a placeholder is used and the registration still works there.)
"""

import json
import sys

import boto3

ENDPOINT = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:4566"
REGION = "us-east-1"
PLATFORM_ACCOUNT = "000000000000"
TENANT_ACCOUNT = "111111111111"
EXTERNAL_ID = sys.argv[2] if len(sys.argv) > 2 else "replace-with-the-broker-external-id"
ROLE_NAME = "byok-broker-access"
ALIAS = "alias/acme-byok-demo"


def client(service, account):
    return boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id=account,
        aws_secret_access_key="test",
    )


def tenant_key(kms):
    for alias in kms.list_aliases()["Aliases"]:
        if alias["AliasName"] == ALIAS and "TargetKeyId" in alias:
            return kms.describe_key(KeyId=alias["TargetKeyId"])["KeyMetadata"]["Arn"]
    arn = kms.create_key(Description="acme BYOK demo key", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName=ALIAS, TargetKeyId=arn)
    return arn


def tenant_role(iam):
    trust = {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{PLATFORM_ACCOUNT}:root"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}},
        }],
    }
    try:
        arn = iam.get_role(RoleName=ROLE_NAME)["Role"]["Arn"]
        # A re-run with the broker's external id must update the trust policy, not keep the old one.
        iam.update_assume_role_policy(RoleName=ROLE_NAME, PolicyDocument=json.dumps(trust))
    except iam.exceptions.NoSuchEntityException:
        arn = iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    return arn


def allow_key_use(iam, key_arn):
    policy = {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["kms:DescribeKey", "kms:GenerateDataKey", "kms:Decrypt", "kms:Encrypt", "kms:ReEncrypt*"],
            "Resource": key_arn,
        }],
    }
    iam.put_role_policy(RoleName=ROLE_NAME, PolicyName="byok-broker-key-use", PolicyDocument=json.dumps(policy))


def main():
    key_arn = tenant_key(client("kms", TENANT_ACCOUNT))
    iam = client("iam", TENANT_ACCOUNT)
    role_arn = tenant_role(iam)
    allow_key_use(iam, key_arn)
    # Prove the broker's account can assume the role with the external id.
    client("sts", PLATFORM_ACCOUNT).assume_role(
        RoleArn=role_arn, RoleSessionName="byok-seed-check", ExternalId=EXTERNAL_ID
    )
    print(json.dumps({
        "match_context": {"organization_id": "org_acme"},
        "provider": "aws_kms",
        "key_arn": key_arn,
        "region": REGION,
        "role_arn": role_arn,
    }, indent=2))


if __name__ == "__main__":
    main()
