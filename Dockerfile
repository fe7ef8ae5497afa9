# The production image: agentstream without the embedded development broker (the `dev` extra),
# running as an unprivileged user (uid 10001, as deploy/kubernetes runs it). Add your agents'
# module in a stage of your own, e.g.
#   FROM agentstream:0.1.0
#   COPY myagents.py /app/
# and set AGENTSTREAM_APP_MODULE=myagents (deploy/kubernetes/00-configmap.yaml).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY agents ./agents
COPY streams ./streams
COPY topics ./topics
# Wheels of agentstream and of every dependency, so the runtime stage needs no compiler.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN groupadd --gid 10001 agentstream \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin agentstream
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels agentstream && rm -rf /wheels
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["agentstream"]
CMD ["--help"]
