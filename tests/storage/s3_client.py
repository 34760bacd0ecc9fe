#!/usr/bin/python3
"""boto3 client of tests/storage/test_s3.c (Debian python3-boto3).

s3_client.py PORT TOKEN put KEY...   put then get each key; prints "KEY ok" or
                                     "KEY ERR <http status> <S3 error code>"
s3_client.py PORT TOKEN stale KEY    put KEY expecting a refusal; prints
                                     "ERR <http status> <code> <message>"
The token goes into every request as Fencing-Token (added before signing,
so it is one of the signed headers and the store checks it unchanged)."""
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

port, token, action, keys = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
s3 = boto3.client(
    's3', endpoint_url='http://127.0.0.1:' + port, aws_access_key_id='S3RVER',
    aws_secret_access_key='S3RVER', region_name='us-east-1',
    config=Config(s3={'addressing_style': 'path'}, retries={'max_attempts': 1}))
s3.meta.events.register(
    'before-sign.s3.*', lambda request, **kw: request.headers.__setitem__('Fencing-Token', token))


def err(e):
    r = e.response
    return '%s %s %s' % (r['ResponseMetadata']['HTTPStatusCode'], r['Error'].get('Code'),
                         r['Error'].get('Message'))


if action == 'put':
    for k in keys:
        body = ('value of ' + k).encode()
        try:
            s3.put_object(Bucket='bkt', Key=k, Body=body)
            got = s3.get_object(Bucket='bkt', Key=k)['Body'].read()
            print('%r %s' % (k, 'ok' if got == body else 'MISMATCH %r' % got))
        except ClientError as e:
            print('%r ERR %s' % (k, err(e)))
elif action == 'stale':
    try:
        s3.put_object(Bucket='bkt', Key=keys[0], Body=b'stale')
        print('accepted')
    except ClientError as e:
        print('ERR ' + err(e))
