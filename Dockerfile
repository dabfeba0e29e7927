# knflow container image: build on Debian 12 with the project's own install script, run on a slim
# Debian 12 with only the shared libraries the binary links.
#   docker build -t knflow .
#   docker run -p 8080:8080 -v knflow-data:/var/lib/knflow \
#     -v $PWD/tokens:/etc/knflow/tokens:ro knflow
# Listening on all interfaces needs a token file (one bearer token per line): the daemon refuses
# to start without one.
FROM debian:12 AS build
RUN apt-get update && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/install-deps.sh \
    && cmake --preset release -DKNFLOW_BUILD_TESTS=OFF \
    && cmake --build --preset release \
    && strip build/release/knflow

FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      libboost-json1.81.0 libboost-url1.81.0 libboost-program-options1.81.0 libyaml-cpp0.7 \
      libgit2-1.5 libsqlite3-0 libprometheus-cpp-core1.0 libssl3 libjq1 libseccomp2 libre2-9 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 65532 --home-dir /var/lib/knflow --create-home knflow
COPY --from=build /src/build/release/knflow /usr/local/bin/knflow
USER knflow
EXPOSE 8080
VOLUME /var/lib/knflow
ENTRYPOINT ["/usr/local/bin/knflow"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--data-dir", "/var/lib/knflow", \
     "--token-file", "/etc/knflow/tokens", "--anonymous-health"]
