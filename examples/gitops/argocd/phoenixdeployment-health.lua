-- Argo CD health check for serving.phoenixoperator.io/PhoenixDeployment.
--
-- The operator derives its conditions from what the children really do (Deployment counters,
-- pods the scheduler refused, the Milvus collection), so they map directly:
--   Degraded=True     -> Degraded     a problem someone must fix (InsufficientGPU, SecretNotFound, ...)
--   Ready=True        -> Healthy
--   Progressing=True  -> Progressing  rolling out or scaling
--   anything else     -> Progressing  being created, waiting for Milvus, spec not observed yet
-- Only Lua's base library is used: Argo CD runs health scripts without the standard libraries.
local hs = {}
hs.status = "Progressing"
hs.message = "Waiting for the operator to report status"

if obj.status == nil or obj.status.conditions == nil then
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local conditions = {}
for _, condition in ipairs(obj.status.conditions) do
  if condition.type ~= nil then
    conditions[condition.type] = condition
  end
end

local function describe(condition)
  local text = condition.reason or ""
  if condition.message ~= nil and condition.message ~= "" then
    if text ~= "" then
      text = text .. ": "
    end
    text = text .. condition.message
  end
  return text
end

local degraded = conditions["Degraded"]
local ready = conditions["Ready"]
local progressing = conditions["Progressing"]

if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded)
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end
if progressing ~= nil and progressing.status == "True" then
  hs.message = describe(progressing)
  return hs
end
if ready ~= nil then
  hs.message = describe(ready)
end
return hs
