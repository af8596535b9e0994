"""Fixtures in the AWS emulator (moto) for the functions tests, with boto3.

    moto_lambda.py ENDPOINT setup REGION FUNCTION VERSIONS   # function with versions 1..VERSIONS, alias live -> 1
    moto_lambda.py ENDPOINT route REGION FUNCTION VERSION [EXTRA WEIGHT]   # someone else sets the alias
    moto_lambda.py ENDPOINT queue REGION NAME   # an SQS queue; prints its ARN
    moto_lambda.py ENDPOINT traffic REGION FUNCTION VERSION INVOCATIONS ERRORS   # per second, the last and next 2 minutes
    moto_lambda.py ENDPOINT errors REGION FUNCTION VERSION COUNT   # AWS/Lambda Errors of that version, each second of the last and next 2 minutes
"""
import io
import json
import sys
import zipfile

import boto3

endpoint, command, region, function = sys.argv[1:5]
kw = dict(endpoint_url=endpoint, region_name=region, aws_access_key_id="testing", aws_secret_access_key="testing")
lam = boto3.client("lambda", **kw)

if command == "setup":
    versions = int(sys.argv[5])
    iam = boto3.client("iam", **kw)
    try:
        role = iam.create_role(RoleName="fn", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
        role = role["Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName="fn")["Role"]["Arn"]
    def code(n):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("h.py", f"def h(event, context):\n    return {n}\n")
        return buf.getvalue()

    lam.create_function(FunctionName=function, Runtime="python3.11", Role=role, Handler="h.h", Code={"ZipFile": code(0)})
    for n in range(1, versions + 1):
        if n > 1:
            lam.update_function_code(FunctionName=function, ZipFile=code(n))
        published = lam.publish_version(FunctionName=function)["Version"]
        assert published == str(n), (published, n)
    lam.create_alias(FunctionName=function, Name="live", FunctionVersion="1")
elif command == "route":
    version = sys.argv[5]
    routing = {"AdditionalVersionWeights": {sys.argv[6]: float(sys.argv[7])}} if len(sys.argv) > 6 else {"AdditionalVersionWeights": {}}
    lam.update_alias(FunctionName=function, Name="live", FunctionVersion=version, RoutingConfig=routing)
elif command == "queue":
    sqs = boto3.client("sqs", **kw)
    url = sqs.create_queue(QueueName=function)["QueueUrl"]
    print(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])
elif command in ("errors", "traffic"):
    import datetime

    version = sys.argv[5]
    metrics = {"Errors": float(sys.argv[6])} if command == "errors" else {"Invocations": float(sys.argv[6]), "Errors": float(sys.argv[7])}
    cw = boto3.client("cloudwatch", **kw)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    dimensions = [
        {"Name": "FunctionName", "Value": function},
        {"Name": "Resource", "Value": f"{function}:live"},
        {"Name": "ExecutedVersion", "Value": version},
    ]
    data = [
        {"MetricName": name, "Dimensions": dimensions, "Timestamp": now + datetime.timedelta(seconds=s), "Value": value}
        for s in range(-120, 120)
        for name, value in metrics.items()
    ]
    for i in range(0, len(data), 500):
        cw.put_metric_data(Namespace="AWS/Lambda", MetricData=data[i : i + 500])
else:
    sys.exit(f"unknown command {command}")
