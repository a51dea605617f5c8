! One RK4 step of the coarse Lorenz96 model with a trained closure called through FTorch.
! Build and run: see ftorch_closure.md beside this file.
program lorenz96_ftorch_step
  use, intrinsic :: iso_fortran_env, only : dp => real64
  use ftorch
  implicit none

  integer, parameter :: batch = 1, K = 8
  real(dp), parameter :: F = 10.0_dp, dt = 0.005_dp
  real(dp), dimension(batch, K), target :: X, k1, k2, k3, k4, stage
  character(len=256) :: model_file
  type(torch_model) :: closure
  integer :: i

  call get_command_argument(1, model_file)
  call torch_model_load(closure, trim(model_file))

  X = reshape([(real(i, dp), i = 1, batch * K)], [batch, K])
  call tendency(X, k1)
  stage = X + 0.5_dp * dt * k1
  call tendency(stage, k2)
  stage = X + 0.5_dp * dt * k2
  call tendency(stage, k3)
  stage = X + dt * k3
  call tendency(stage, k4)
  X = X + dt / 6.0_dp * (k1 + 2.0_dp * k2 + 2.0_dp * k3 + k4)
  write (*, '(8f10.5)') X(1, :)
  call torch_model_delete(closure)

contains

  ! dX/dt = X_{k-1} (X_{k+1} - X_{k-2}) - X_k + F + closure(X)
  subroutine tendency(state, dxdt)
    real(dp), dimension(batch, K), target, intent(in) :: state
    real(dp), dimension(batch, K), target, intent(out) :: dxdt
    real(dp), dimension(batch, K), target :: u
    type(torch_tensor), dimension(1) :: inputs, outputs
    integer :: layout(2) = [1, 2]

    call torch_tensor_from_array(inputs(1), state, layout, torch_kCPU)
    call torch_tensor_from_array(outputs(1), u, layout, torch_kCPU)
    call torch_model_forward(closure, inputs, outputs)
    dxdt = cshift(state, -1, 2) * (cshift(state, 1, 2) - cshift(state, -2, 2)) - state + F + u
    call torch_tensor_delete(inputs(1))
    call torch_tensor_delete(outputs(1))
  end subroutine tendency

end program lorenz96_ftorch_step
